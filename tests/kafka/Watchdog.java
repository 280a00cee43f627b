import java.lang.reflect.Method;
import java.util.Arrays;

/**
 * Runs a main class (the Kafka broker) and halts the JVM when its standard
 * input closes, so a broker never outlives the test process that started
 * it, even when that process is killed.
 */
public final class Watchdog {
    public static void main(String[] args) throws Exception {
        Thread watch = new Thread(() -> {
            try {
                while (System.in.read() != -1) {
                    // Anything written is ignored; only the end matters.
                }
            } catch (Exception ignored) {
                // Broken pipe: the parent is gone.
            }
            Runtime.getRuntime().halt(0);
        }, "stdin-watchdog");
        watch.setDaemon(true);
        watch.start();
        Method main = Class.forName(args[0]).getMethod("main", String[].class);
        main.invoke(null, (Object) Arrays.copyOfRange(args, 1, args.length));
    }
}
