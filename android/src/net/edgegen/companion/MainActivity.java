package net.edgegen.companion;

import android.app.Activity;
import android.net.Uri;
import android.os.Bundle;
import android.view.WindowManager;
import android.webkit.WebSettings;
import android.webkit.WebView;

/**
 * One WebView running the companion page from the APK's assets, over the
 * https://appassets.androidplatform.net origin that {@link AssetServer} answers for
 * (onnxruntime-web does not load from file://). Java 7 style and API 23 calls only: the app
 * is built without Gradle, against Debian's android-23 jar, and dexed by dx.
 *
 * Intent extras become the page's query string, so a fleet can be set from adb:
 * {@code am start -n net.edgegen.companion/.MainActivity --es pushgateway http://10.0.0.5:9091
 * --es device pixel6-01} (the page keeps them in localStorage). With a {@code bench} extra (the
 * spec fleet/phonebench.py makes) the page runs its bench mode: the {@link BenchBridge} is
 * added for it, and the screen is kept on while it measures.
 */
public class MainActivity extends Activity {
    static final String[] EXTRAS = {"pushgateway", "device", "threads", "bench"};

    private WebView web;

    @Override
    protected void onCreate(Bundle state) {
        super.onCreate(state);
        web = new WebView(this);
        WebSettings settings = web.getSettings();
        settings.setJavaScriptEnabled(true);
        settings.setDomStorageEnabled(true);  // the page's settings live in localStorage
        settings.setAllowFileAccess(false);
        settings.setAllowContentAccess(false);
        // The page is https (the asset origin); a fleet's Pushgateway is usually plain http
        // on the LAN. Only the page's own metrics push is such a request.
        settings.setMixedContentMode(WebSettings.MIXED_CONTENT_ALWAYS_ALLOW);
        web.setWebViewClient(new AssetServer(getAssets()));
        if (getIntent().getStringExtra("bench") != null) {
            web.addJavascriptInterface(new BenchBridge(this), BenchBridge.NAME);
            getWindow().addFlags(WindowManager.LayoutParams.FLAG_KEEP_SCREEN_ON);
        }
        setContentView(web);
        if (state != null) {
            web.restoreState(state);
        } else {
            web.loadUrl(startUrl());
        }
    }

    private String startUrl() {
        Uri.Builder url = Uri.parse(AssetServer.ORIGIN + AssetServer.PREFIX + "companion/index.html")
                .buildUpon();
        for (String name : EXTRAS) {
            String value = getIntent().getStringExtra(name);
            if (value != null) {
                url.appendQueryParameter(name, value);
            }
        }
        return url.build().toString();
    }

    @Override
    protected void onSaveInstanceState(Bundle state) {
        super.onSaveInstanceState(state);
        web.saveState(state);
    }

    @Override
    public void onBackPressed() {
        if (web.canGoBack()) {
            web.goBack();
        } else {
            super.onBackPressed();
        }
    }

    @Override
    protected void onDestroy() {
        web.destroy();
        super.onDestroy();
    }
}
