package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/rs/zerolog"

	"github.com/takt-edge/takt/agent/store"
	"github.com/takt-edge/takt/cloudsync/cli"
)

func openStore(dir string) (*store.Store, error) {
	if dir == "" {
		return nil, cli.Usagef("--data-dir is required")
	}
	if _, err := os.Stat(filepath.Join(dir, "takt.db")); err != nil {
		return nil, fmt.Errorf("no verdict store in %s: %w", dir, err)
	}
	return store.Open(dir, store.Options{Logger: zerolog.Nop(), OpenTimeout: 2 * time.Second})
}

// storeCommand parses a store subcommand's flags (--data-dir and what addFlags adds), opens
// the store and runs fn on it.
func storeCommand(name string, args []string, stderr io.Writer, addFlags func(*flag.FlagSet), fn func(st *store.Store, dir string) error) error {
	fs := newFlags(name, stderr)
	dir := fs.String("data-dir", "/var/lib/takt", "the agent's data_dir")
	if addFlags != nil {
		addFlags(fs)
	}
	if err := parseFlags(fs, args, 0); err != nil {
		return err
	}
	st, err := openStore(*dir)
	if err != nil {
		return err
	}
	defer st.Close()
	return fn(st, *dir)
}

func cmdStoreCounts(args []string, stdout, stderr io.Writer) error {
	return storeCommand("store counts", args, stderr, nil, func(st *store.Store, _ string) error {
		c, err := st.Counts()
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "parts=%d pass=%d fail=%d no_decision=%d\n", c.Total, c.Pass, c.Fail, c.NoDecision)
		return nil
	})
}

func cmdStoreList(args []string, stdout, stderr io.Writer) error {
	var after *uint64
	var limit *int
	flags := func(fs *flag.FlagSet) {
		after = fs.Uint64("after", 0, "list verdicts with an id above this")
		limit = fs.Int("limit", 100, "at most this many verdicts")
	}
	return storeCommand("store list", args, stderr, flags, func(st *store.Store, _ string) error {
		vs, err := st.List(*after, *limit)
		if err != nil {
			return err
		}
		enc := json.NewEncoder(stdout)
		for _, v := range vs {
			if err := enc.Encode(v); err != nil {
				return err
			}
		}
		return nil
	})
}
