package main

import (
	"fmt"
	"io"
	"time"

	"github.com/takt-edge/takt/agent/store"
)

func cmdStoreCompact(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("store compact", stderr)
	dir := fs.String("data-dir", "/var/lib/takt", "the agent's data_dir (the agent must be stopped)")
	if err := parseFlags(fs, args, 0); err != nil {
		return err
	}
	before, after, err := store.Compact(*dir, 2*time.Second)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "compacted %s/takt.db: %d -> %d bytes\n", *dir, before, after)
	return nil
}

func cmdStoreCheck(args []string, stdout, stderr io.Writer) error {
	return storeCommand("store check", args, stderr, nil, func(st *store.Store, dir string) error {
		if err := st.Check(); err != nil {
			return fmt.Errorf("store %s is inconsistent:\n%w", dir, err)
		}
		fmt.Fprintln(stdout, "ok")
		return nil
	})
}

func cmdStoreBacklog(args []string, stdout, stderr io.Writer) error {
	return storeCommand("store backlog", args, stderr, nil, func(st *store.Store, _ string) error {
		b, err := st.Backlog()
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "backlog: count=%d labels=%d bytes=%d oldest_age=%s\n", b.Count, b.Labels, b.Bytes, b.Age(time.Now()).Round(time.Second))
		return nil
	})
}
