/*
 * The class loader behind the "?" suffix of libffi_java's cfg: each runtime
 * start gets its own copy of the entry class's package, read from disk anew.
 *
 * libffi_java defines this class from bytes compiled into the loader library
 * (so it needs no file of its own) and calls load() over JNI. Only classes of
 * the entry class's package (and its subpackages) are loaded child-first; all
 * others (the JDK, jnr-ffi, jffi and other libraries on the class path) come
 * from the system class loader, so their static state and their native
 * libraries are loaded once per process, as they must be.
 */

package resty.ffi;

import java.io.File;
import java.net.MalformedURLException;
import java.net.URL;
import java.net.URLClassLoader;
import java.util.ArrayList;
import java.util.List;

public final class FreshClassLoader extends URLClassLoader {

    static {
        registerAsParallelCapable();
    }

    /* "demo.echo." for demo.echo.App; "" for a class without a package */
    private final String prefix;

    private FreshClassLoader(URL[] urls, String prefix, ClassLoader parent) {
        super(urls, parent);
        this.prefix = prefix;
    }

    /*
     * Loads and initializes class name through a new loader that searches
     * path (directories and jars, separated by File.pathSeparator).
     */
    public static Class<?> load(String name, String path)
        throws ClassNotFoundException, MalformedURLException
    {
        List<URL>  urls = new ArrayList<>();
        int        dot;

        for (String entry : path.split(File.pathSeparator)) {
            if (!entry.isEmpty()) {
                urls.add(new File(entry).toURI().toURL());
            }
        }

        dot = name.lastIndexOf('.');

        FreshClassLoader loader = new FreshClassLoader(
            urls.toArray(new URL[0]),
            dot < 0 ? "" : name.substring(0, dot + 1),
            ClassLoader.getSystemClassLoader());

        return Class.forName(name, true, loader);
    }

    private boolean reloadable(String name) {
        if (prefix.isEmpty()) {
            return name.indexOf('.') < 0;
        }

        return name.startsWith(prefix);
    }

    @Override
    protected Class<?> loadClass(String name, boolean resolve)
        throws ClassNotFoundException
    {
        if (!reloadable(name)) {
            return super.loadClass(name, resolve);
        }

        synchronized (getClassLoadingLock(name)) {
            Class<?> c = findLoadedClass(name);

            if (c == null) {
                try {
                    c = findClass(name);

                } catch (ClassNotFoundException e) {
                    /* not in our path: a class of that package elsewhere */
                    return super.loadClass(name, resolve);
                }
            }

            if (resolve) {
                resolveClass(c);
            }

            return c;
        }
    }
}
