package net.edgegen.companion;

import android.content.Intent;
import android.content.res.AssetManager;
import android.net.Uri;
import android.webkit.WebResourceRequest;
import android.webkit.WebResourceResponse;
import android.webkit.WebView;
import android.webkit.WebViewClient;

import java.io.ByteArrayInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.util.HashMap;
import java.util.Locale;
import java.util.Map;

/**
 * Serves the APK's assets at https://appassets.androidplatform.net/assets/..., the origin
 * androidx.webkit's WebViewAssetLoader uses (that library needs Maven; this is the part we
 * need, in plain API 21 calls). Paths are looked up in the asset tree only: no "..", no
 * file system. Other hosts are left to the network (the optional Pushgateway push); links
 * to them open in the browser.
 */
public class AssetServer extends WebViewClient {
    static final String HOST = "appassets.androidplatform.net";
    static final String ORIGIN = "https://" + HOST;
    static final String PREFIX = "/assets/";

    private static final Map<String, String> TYPES = new HashMap<String, String>();

    static {
        TYPES.put("html", "text/html");
        TYPES.put("js", "text/javascript");
        TYPES.put("mjs", "text/javascript");
        TYPES.put("css", "text/css");
        TYPES.put("json", "application/json");
        TYPES.put("wasm", "application/wasm");  // streaming compilation requires this type
        TYPES.put("png", "image/png");
    }

    private final AssetManager assets;

    public AssetServer(AssetManager assets) {
        this.assets = assets;
    }

    static String mimeType(String path) {
        int dot = path.lastIndexOf('.');
        String type = dot < 0 ? null : TYPES.get(path.substring(dot + 1).toLowerCase(Locale.ROOT));
        return type != null ? type : "application/octet-stream";
    }

    @Override
    public WebResourceResponse shouldInterceptRequest(WebView view, WebResourceRequest request) {
        Uri url = request.getUrl();
        if (!"https".equals(url.getScheme()) || !HOST.equals(url.getHost())) {
            return null;
        }
        String path = url.getPath();
        if (path == null || !path.startsWith(PREFIX) || path.contains("..")) {
            return error(404, "Not Found");
        }
        if (!"GET".equals(request.getMethod())) {
            return error(405, "Method Not Allowed");
        }
        String name = path.substring(PREFIX.length());
        Map<String, String> headers = new HashMap<String, String>();
        headers.put("Cache-Control", "no-cache");
        try {
            InputStream data = assets.open(name, AssetManager.ACCESS_STREAMING);
            String type = mimeType(name);
            String charset = type.startsWith("text/") || type.endsWith("json") ? "utf-8" : null;
            return new WebResourceResponse(type, charset, 200, "OK", headers, data);
        } catch (IOException e) {
            return error(404, "Not Found");
        }
    }

    private static WebResourceResponse error(int status, String reason) {
        String body = "{\"error\": {\"message\": \"" + reason + "\", \"type\": \"invalid_request_error\", "
                + "\"code\": \"" + reason.toLowerCase(Locale.ROOT).replace(' ', '_') + "\"}}";
        return new WebResourceResponse("application/json", "utf-8", status, reason,
                new HashMap<String, String>(), new ByteArrayInputStream(body.getBytes(StandardCharsets.UTF_8)));
    }

    @Override
    public boolean shouldOverrideUrlLoading(WebView view, String url) {
        if (url.startsWith(ORIGIN + "/")) {
            return false;
        }
        view.getContext().startActivity(new Intent(Intent.ACTION_VIEW, Uri.parse(url)));
        return true;
    }
}
