package cmd

import (
	"os"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"github.com/relocate/relocate/ckpt"
)

// showProgress draws p on stderr until the returned stop is called. It
// draws nothing when stderr is not a terminal or when quiet.
func showProgress(p *ckpt.Progress, quiet bool) (stop func()) {
	if quiet || !term.IsTerminal(int(os.Stderr.Fd())) {
		return func() {}
	}
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		var bar *progressbar.ProgressBar
		var phase string
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-done:
				if bar != nil {
					_ = bar.Finish()
					os.Stderr.WriteString("\n")
				}
				return
			case <-tick.C:
			}
			ph, _ := p.Phase.Load().(string)
			if ph != phase {
				if bar != nil {
					_ = bar.Finish()
					os.Stderr.WriteString("\n")
				}
				phase = ph
				opts := []progressbar.Option{
					progressbar.OptionSetWriter(os.Stderr),
					progressbar.OptionSetDescription(ph),
					progressbar.OptionSetWidth(30),
					progressbar.OptionThrottle(100 * time.Millisecond),
					progressbar.OptionClearOnFinish(),
				}
				total := p.Total.Load()
				if total > 0 {
					opts = append(opts, progressbar.OptionShowBytes(true), progressbar.OptionShowCount())
				} else {
					total = -1 // a phase of unknown length: a spinner
					opts = append(opts, progressbar.OptionSetElapsedTime(true))
				}
				bar = progressbar.NewOptions64(total, opts...)
			}
			if bar != nil {
				_ = bar.Set64(p.Done.Load())
			}
		}
	}()
	return func() { close(done); <-finished }
}
