package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/rs/zerolog"

	"github.com/takt-edge/takt/agent/store"
)

func openStore(dir string) (*store.Store, error) {
	if dir == "" {
		return nil, fmt.Errorf("--data-dir is required")
	}
	if _, err := os.Stat(filepath.Join(dir, "takt.db")); err != nil {
		return nil, fmt.Errorf("no verdict store in %s: %w", dir, err)
	}
	return store.Open(dir, store.Options{Logger: zerolog.Nop(), OpenTimeout: 2 * time.Second})
}

func cmdStoreCounts(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("store counts", stderr)
	dir := fs.String("data-dir", "/var/lib/takt", "the agent's data_dir")
	if err := parseFlags(fs, args, 0); err != nil {
		return err
	}
	st, err := openStore(*dir)
	if err != nil {
		return err
	}
	defer st.Close()
	c, err := st.Counts()
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "parts=%d pass=%d fail=%d no_decision=%d\n", c.Total, c.Pass, c.Fail, c.NoDecision)
	return nil
}

func cmdStoreList(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("store list", stderr)
	dir := fs.String("data-dir", "/var/lib/takt", "the agent's data_dir")
	after := fs.Uint64("after", 0, "list verdicts with an id above this")
	limit := fs.Int("limit", 100, "at most this many verdicts")
	if err := parseFlags(fs, args, 0); err != nil {
		return err
	}
	st, err := openStore(*dir)
	if err != nil {
		return err
	}
	defer st.Close()
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
}
