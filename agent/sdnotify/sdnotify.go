// Package sdnotify speaks systemd's sd_notify datagram protocol on $NOTIFY_SOCKET for a
// Type=notify unit: READY=1 once the station inspects, WATCHDOG=1 at half the WatchdogSec
// period while the station is healthy, STOPPING=1 on the way out.
//
// # Caveats
//
// Outside systemd (no $NOTIFY_SOCKET) New returns nil and nothing is sent. A missed
// watchdog ping is how an unhealthy station gets restarted: the package never pings
// while Station.Healthy says no.
package sdnotify

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/rs/zerolog"
)

// Notifier sends to the service manager's notify socket.
type Notifier struct {
	addr *net.UnixAddr
}

// New returns nil when the process does not run under a notify-aware manager.
func New() *Notifier {
	name := os.Getenv("NOTIFY_SOCKET")
	if name == "" {
		return nil
	}
	if name[0] == '@' { // abstract socket
		name = "\x00" + name[1:]
	}
	return &Notifier{addr: &net.UnixAddr{Name: name, Net: "unixgram"}}
}

// send sends one datagram of newline-separated VAR=value assignments.
func (n *Notifier) send(state string) error {
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

// WatchdogPeriod is systemd's WatchdogSec for this process ($WATCHDOG_USEC, when
// $WATCHDOG_PID is unset or names this process), or 0.
func WatchdogPeriod() time.Duration {
	us, err := strconv.ParseInt(os.Getenv("WATCHDOG_USEC"), 10, 64)
	if err != nil || us <= 0 {
		return 0
	}
	if pid := os.Getenv("WATCHDOG_PID"); pid != "" && pid != strconv.Itoa(os.Getpid()) {
		return 0
	}
	return time.Duration(us) * time.Microsecond
}

// Station is what the notifier needs of the running station.
type Station interface {
	// Healthy reports whether the inspection loop is not stuck, with a note for STATUS.
	Healthy() (bool, string)
	// Parts is the number of verdicts committed, for STATUS.
	Parts() uint64
}

// Run tells systemd the station is ready and pets its watchdog while st is healthy, until
// ctx is done; then it says the station is stopping.
func (n *Notifier) Run(ctx context.Context, st Station, log zerolog.Logger) error {
	if err := n.send("READY=1\nSTATUS=inspecting"); err != nil {
		log.Warn().Err(err).Msg("cannot notify systemd")
	}
	defer n.send("STOPPING=1\nSTATUS=stopping")
	period := WatchdogPeriod()
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
			if ok, why := st.Healthy(); !ok {
				// No ping: systemd restarts the agent when the period runs out.
				n.send("STATUS=unhealthy: " + why)
				continue
			}
			n.send(fmt.Sprintf("WATCHDOG=1\nSTATUS=inspecting: %d parts", st.Parts()))
		}
	}
}
