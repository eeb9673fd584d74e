package lambda

import (
	"os"
	"os/signal"
	"syscall"
)

// enableSIGTERM runs funcs when the process receives SIGTERM, then exits.
func enableSIGTERM(funcs []func()) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGTERM)
	go func() {
		<-ch
		for _, f := range funcs {
			f()
		}
		os.Exit(0)
	}()
}
