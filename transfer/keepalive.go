package transfer

import (
	"time"

	"golang.org/x/crypto/ssh"
)

// keepAlive asks the server for a reply every interval and closes c after
// maxMissed unanswered requests in a row. Without it a migration whose
// network died would wait on TCP for hours. It returns when c is closed.
func keepAlive(c ssh.Conn, every time.Duration, maxMissed int) {
	closed := make(chan struct{})
	go func() {
		c.Wait()
		close(closed)
	}()
	tick := time.NewTicker(every)
	defer tick.Stop()
	missed := 0
	for {
		select {
		case <-closed:
			return
		case <-tick.C:
		}
		if answered(c, every, closed) {
			missed = 0
			continue
		}
		missed++
		if missed >= maxMissed {
			c.Close()
			return
		}
	}
}

// answered sends one keepalive and waits up to wait for any reply; OpenSSH
// answers "failure" to a request it does not know, which proves it alive.
func answered(c ssh.Conn, wait time.Duration, closed <-chan struct{}) bool {
	reply := make(chan struct{}, 1)
	go func() {
		// An error means c closed; the closed channel reports that.
		if _, _, err := c.SendRequest("keepalive@openssh.com", true, nil); err == nil {
			reply <- struct{}{}
		}
	}()
	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case <-reply:
		return true
	case <-closed:
		return true
	case <-timer.C:
		return false
	}
}
