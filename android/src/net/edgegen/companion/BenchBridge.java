package net.edgegen.companion;

import android.content.Context;
import android.content.Intent;
import android.content.IntentFilter;
import android.os.BatteryManager;
import android.os.Build;
import android.os.SystemClock;
import android.webkit.JavascriptInterface;

import org.json.JSONArray;
import org.json.JSONException;
import org.json.JSONObject;

import java.io.File;
import java.io.FileInputStream;
import java.io.FileOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;

/**
 * The page's bench mode bridge, window.EdgeGenBench (companion/bench.js), added only when the
 * app is started with a bench extra ({@code make bench DEVICE=pixel}, fleet/phonebench.py):
 * - write(path, text): a result file under the app's files/bench/, where
 *   {@code adb shell run-as net.edgegen.companion cat files/bench/...} reads it;
 * - powerStart() / powerStop(): battery power sampled at 10 Hz on a thread of its own (the
 *   page's thread is busy running the model): |current_now| x voltage from BatteryManager,
 *   null while plugged in (a charging battery says nothing about the load), as
 *   edge_app/power/sensors.py AndroidBatterySensor reads sysfs on other Android devices;
 * - deviceInfo(): model, ABI, Android release and /proc/cpuinfo (the CPU's features).
 * Every method returns "" or JSON on success and an error message otherwise: the page turns it
 * into a failed bench with the message. Java 7 style, API 23 calls (android/build.sh).
 */
public class BenchBridge {
    static final String NAME = "EdgeGenBench";
    private static final long PERIOD_MS = 100;

    private final Context context;
    private final File dir;
    private final List<double[]> samples = new ArrayList<double[]>();  // {seconds, watts or NaN}
    private volatile boolean sampling;
    private Thread sampler;

    public BenchBridge(Context context) {
        this.context = context;
        this.dir = new File(context.getFilesDir(), "bench");
    }

    @JavascriptInterface
    public String reset() {
        delete(dir);
        return dir.mkdirs() || dir.isDirectory() ? "" : "cannot create " + dir;
    }

    @JavascriptInterface
    public String write(String path, String text) {
        if (path.startsWith("/") || path.contains("..") || path.contains("\\")) {
            return "refused path " + path;
        }
        File file = new File(dir, path);
        File tmp = new File(file.getPath() + ".tmp");
        if (!file.getParentFile().isDirectory() && !file.getParentFile().mkdirs()) {
            return "cannot create " + file.getParentFile();
        }
        OutputStream out = null;
        try {
            out = new FileOutputStream(tmp);
            out.write(text.getBytes(StandardCharsets.UTF_8));
            out.close();
            out = null;
            return tmp.renameTo(file) ? "" : "cannot rename " + tmp;  // whole or not at all
        } catch (IOException e) {
            return e.toString();
        } finally {
            if (out != null) {
                try {
                    out.close();
                } catch (IOException ignored) {
                    // the write already failed and said so
                }
            }
        }
    }

    @JavascriptInterface
    public String deviceInfo() {
        try {
            JSONObject info = new JSONObject();
            info.put("model", Build.MANUFACTURER + " " + Build.MODEL + " (" + Build.HARDWARE + ")");
            info.put("arch", System.getProperty("os.arch"));
            info.put("android", "Android " + Build.VERSION.RELEASE + " (API " + Build.VERSION.SDK_INT + ")");
            info.put("cpuinfo", read(new File("/proc/cpuinfo")));
            return info.toString();
        } catch (JSONException e) {
            return "{}";
        }
    }

    @JavascriptInterface
    public synchronized String powerStart() {
        stopSampler();
        synchronized (samples) {
            samples.clear();
        }
        final long start = SystemClock.elapsedRealtime();
        sampling = true;
        sampler = new Thread(new Runnable() {
            @Override
            public void run() {
                long next = SystemClock.elapsedRealtime();
                while (sampling) {
                    double watts = watts();
                    synchronized (samples) {
                        samples.add(new double[] {(SystemClock.elapsedRealtime() - start) / 1000.0, watts});
                    }
                    next += PERIOD_MS;
                    long delay = next - SystemClock.elapsedRealtime();
                    if (delay < 0) {  // fell behind: skip ahead, do not burst
                        next = SystemClock.elapsedRealtime();
                        delay = 0;
                    }
                    SystemClock.sleep(delay);
                }
            }
        }, "edgegen-power");
        sampler.start();
        return "";
    }

    @JavascriptInterface
    public synchronized String powerStop() {
        stopSampler();
        try {
            JSONArray rows = new JSONArray();
            synchronized (samples) {
                for (double[] s : samples) {
                    JSONArray row = new JSONArray();
                    row.put(s[0]);
                    row.put(Double.isNaN(s[1]) ? JSONObject.NULL : (Object) s[1]);
                    rows.put(row);
                }
            }
            return new JSONObject().put("samples", rows).put("error", JSONObject.NULL).toString();
        } catch (JSONException e) {
            return "{\"samples\": [], \"error\": \"" + e.getMessage() + "\"}";
        }
    }

    private void stopSampler() {
        sampling = false;
        if (sampler != null) {
            try {
                sampler.join(2000);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
            sampler = null;
        }
    }

    /** Discharge power in watts, or NaN while plugged in or where the phone does not say. */
    private double watts() {
        Intent battery = context.registerReceiver(null, new IntentFilter(Intent.ACTION_BATTERY_CHANGED));
        if (battery == null || battery.getIntExtra(BatteryManager.EXTRA_PLUGGED, 0) != 0) {
            return Double.NaN;
        }
        BatteryManager manager = (BatteryManager) context.getSystemService(Context.BATTERY_SERVICE);
        int raw = manager.getIntProperty(BatteryManager.BATTERY_PROPERTY_CURRENT_NOW);
        int millivolts = battery.getIntExtra(BatteryManager.EXTRA_VOLTAGE, 0);
        if (raw == 0 || raw == Integer.MIN_VALUE || millivolts <= 0) {
            return Double.NaN;  // not supported by this phone's fuel gauge
        }
        long current = Math.abs((long) raw);
        // µA per the API; some vendors report mA. A phone draws 0.05-5 A, so a value below
        // 20,000 can only be mA (the same rule as the sysfs backend).
        double amps = current < 20000 ? current / 1e3 : current / 1e6;
        return amps * millivolts / 1e3;
    }

    private static String read(File file) {
        InputStream in = null;
        try {
            in = new FileInputStream(file);
            StringBuilder text = new StringBuilder();
            byte[] buf = new byte[8192];
            int n;
            while ((n = in.read(buf)) > 0) {
                text.append(new String(buf, 0, n, StandardCharsets.UTF_8));
            }
            return text.toString();
        } catch (IOException e) {
            return "";
        } finally {
            if (in != null) {
                try {
                    in.close();
                } catch (IOException ignored) {
                    // read-only: nothing lost
                }
            }
        }
    }

    private static void delete(File file) {
        File[] children = file.listFiles();
        if (children != null) {
            for (File child : children) {
                delete(child);
            }
        }
        if (file.exists() && !file.delete()) {
            file.deleteOnExit();
        }
    }
}
