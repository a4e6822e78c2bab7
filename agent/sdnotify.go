package agent

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"time"
)

// notifier speaks systemd's sd_notify datagram protocol on $NOTIFY_SOCKET (Type=notify
// units): READY=1 once the model, store and camera are open, WATCHDOG=1 at half the
// WatchdogSec period while the loop is not wedged, STOPPING=1 on the way out.
type notifier struct {
	addr *net.UnixAddr
}

// newNotifier returns nil when the process does not run under a notify-aware manager.
func newNotifier() *notifier {
	name := os.Getenv("NOTIFY_SOCKET")
	if name == "" {
		return nil
	}
	if name[0] == '@' { // abstract socket
		name = "\x00" + name[1:]
	}
	return &notifier{addr: &net.UnixAddr{Name: name, Net: "unixgram"}}
}

// send sends one datagram of newline-separated VAR=value assignments.
func (n *notifier) send(state string) error {
	c, err := net.DialUnix("unixgram", nil, n.addr)
	if err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(state)); err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	return nil
}

// watchdogPeriod is systemd's WatchdogSec for this process ($WATCHDOG_USEC, when
// $WATCHDOG_PID is unset or names this process), or 0.
func watchdogPeriod() time.Duration {
	us, err := strconv.ParseInt(os.Getenv("WATCHDOG_USEC"), 10, 64)
	if err != nil || us <= 0 {
		return 0
	}
	if pid := os.Getenv("WATCHDOG_PID"); pid != "" && pid != strconv.Itoa(os.Getpid()) {
		return 0
	}
	return time.Duration(us) * time.Microsecond
}

// startSystemd tells systemd the agent is ready and pets its watchdog while healthy.
func (l *live) startSystemd(context.Context) (func(context.Context) error, error) {
	n := newNotifier()
	if n == nil {
		return nil, nil
	}
	log := l.log.With().Str("component", "systemd").Logger()
	return func(ctx context.Context) error {
		if err := n.send("READY=1\nSTATUS=inspecting"); err != nil {
			log.Warn().Err(err).Msg("cannot notify systemd")
		}
		defer n.send("STOPPING=1\nSTATUS=stopping")
		period := watchdogPeriod()
		if period == 0 {
			<-ctx.Done()
			return nil
		}
		t := time.NewTicker(period / 2)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-t.C:
				if ok, why := l.healthy(); !ok {
					// No ping: systemd restarts the agent when the period runs out.
					n.send("STATUS=unhealthy: " + why)
					continue
				}
				c, _ := l.st.Counts()
				n.send(fmt.Sprintf("WATCHDOG=1\nSTATUS=inspecting: %d parts", c.Total))
			}
		}
	}, nil
}
