package dev.nimbus.runtime;

import java.io.BufferedOutputStream;
import java.io.FileDescriptor;
import java.io.FileOutputStream;
import java.io.IOException;
import java.io.OutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;

/**
 * stdout and stderr for the function: Nimbus reads them line by line, so at the end of each
 * invocation a line left open by {@code System.out.print} is ended (else it would be
 * attributed to the next invocation).
 */
final class Output {
    private Output() {}

    private static Tracking out;
    private static Tracking err;

    static void install() {
        out = new Tracking(new FileOutputStream(FileDescriptor.out));
        err = new Tracking(new FileOutputStream(FileDescriptor.err));
        System.setOut(new PrintStream(out, true, StandardCharsets.UTF_8));
        System.setErr(new PrintStream(err, true, StandardCharsets.UTF_8));
    }

    /** Flushes both streams, ending an open line on each. */
    static void endLines() {
        System.out.flush();
        System.err.flush();
        if (out != null) {
            out.endLine();
            err.endLine();
        }
    }

    /** A buffered stream that knows whether the last byte written was a newline. */
    private static final class Tracking extends OutputStream {
        private final OutputStream sink;
        private boolean open;

        Tracking(OutputStream fd) {
            this.sink = new BufferedOutputStream(fd, 8192);
        }

        @Override
        public synchronized void write(int b) throws IOException {
            sink.write(b);
            open = b != '\n';
        }

        @Override
        public synchronized void write(byte[] b, int off, int len) throws IOException {
            if (len > 0) {
                sink.write(b, off, len);
                open = b[off + len - 1] != '\n';
            }
        }

        @Override
        public synchronized void flush() throws IOException {
            sink.flush();
        }

        synchronized void endLine() {
            try {
                if (open) {
                    sink.write('\n');
                    open = false;
                }
                sink.flush();
            } catch (IOException e) {
                // stdout closed: nothing to end
            }
        }
    }
}
