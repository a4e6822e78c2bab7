// Command takt-cloud is Takt's cloud companion (package cloudsync/companion):
//
//	takt-cloud run   --config FILE                      ingest, triggers, jobs, HTTP API, announcements
//	takt-cloud check --config FILE                      validate the config and exit
//	takt-cloud train --server URL --model NAME [--wait] start a training job (POST /train)
//	takt-cloud jobs  --server URL [ID]                  list jobs, or show one with its log
//	takt-cloud version                                  version and build information
//
// It exits 0 on success and on help, 1 when a command fails, 2 on a usage error.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/takt-edge/takt/cloudsync/cli"
	"github.com/takt-edge/takt/cloudsync/companion"
)

func main() { cli.Main("takt-cloud", run) }

func commands() *cli.Command {
	return &cli.Command{Name: "takt-cloud", Subs: []*cli.Command{
		{Name: "run", Summary: "ingest, triggers, jobs, HTTP API, announcements (--config FILE)",
			Run: func(args []string, stdout, stderr io.Writer) error { return cmdRun("run", args, stdout, stderr) }},
		{Name: "check", Summary: "validate the config and exit (--config FILE)",
			Run: func(args []string, stdout, stderr io.Writer) error { return cmdRun("check", args, stdout, stderr) }},
		{Name: "train", Summary: "start a training job (POST /train): --server URL --model NAME [--wait]", Run: cmdTrain},
		{Name: "jobs", Summary: "list jobs, or show one with its log: --server URL [JOB-ID]", Run: cmdJobs},
		cli.VersionCommand("takt-cloud", func() string { return version }),
	}}
}

// version is the release version; release builds set it with
// -ldflags "-X main.version=...", others report the module version from the build information.
var version string

func run(args []string, stdout, stderr io.Writer) error {
	if len(args) == 1 && (args[0] == "--version" || args[0] == "-version") {
		args = []string{"version"}
	}
	return cli.Dispatch(commands(), args, stdout, stderr)
}

func cmdRun(name string, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("takt-cloud "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "/etc/takt/cloud.yaml", "config file")
	format := fs.String("log-format", "json", "log format: json or console")
	if err := cli.Parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return cli.Usagef("%s: unexpected argument %q", fs.Name(), fs.Arg(0))
	}
	cfg, err := companion.LoadConfig(*cfgPath, os.LookupEnv)
	if err != nil {
		return err
	}
	if name == "check" {
		fmt.Fprintf(stdout, "config %s: ok (%d models)\n", *cfgPath, len(cfg.Models))
		return nil
	}
	var out io.Writer = stderr
	if *format == "console" {
		out = zerolog.ConsoleWriter{Out: stderr, TimeFormat: "15:04:05"}
	}
	log := zerolog.New(out).With().Timestamp().Logger()
	c, err := companion.New(cfg, log)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return c.Run(ctx)
}

func cmdTrain(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("takt-cloud train", flag.ContinueOnError)
	fs.SetOutput(stderr)
	server := fs.String("server", "http://127.0.0.1:8090", "takt-cloud's HTTP API")
	model := fs.String("model", "", "model name (required)")
	reason := fs.String("reason", "", "why, for the job record")
	wait := fs.Bool("wait", false, "wait until the job ended and print its outcome")
	timeout := fs.Duration("timeout", 30*time.Minute, "how long --wait waits")
	token := fs.String("token", os.Getenv("TAKT_CLOUD_API_TOKEN"), "the server's api_token (default $TAKT_CLOUD_API_TOKEN)")
	if err := cli.Parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return cli.Usagef("%s: unexpected argument %q", fs.Name(), fs.Arg(0))
	}
	if *model == "" {
		return cli.Usagef("train: --model is required")
	}
	body, _ := json.Marshal(map[string]string{"model": *model, "reason": *reason})
	req, err := http.NewRequest(http.MethodPost, strings.TrimRight(*server, "/")+"/train", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	if *token != "" {
		req.Header.Set("Authorization", "Bearer "+*token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	data, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var job companion.Job
	switch resp.StatusCode {
	case http.StatusAccepted:
		if err := json.Unmarshal(data, &job); err != nil {
			return err
		}
	case http.StatusConflict:
		var r struct {
			Job companion.Job `json:"job"`
		}
		json.Unmarshal(data, &r)
		job = r.Job
		fmt.Fprintf(stdout, "train: job %s of %s is already %s\n", job.ID, job.Model, job.State)
	default:
		return fmt.Errorf("train: %s: %s", resp.Status, strings.TrimSpace(string(data)))
	}
	fmt.Fprintf(stdout, "train: job %s queued for %s\n", job.ID, job.Model)
	if !*wait {
		return nil
	}
	deadline := time.Now().Add(*timeout)
	for time.Now().Before(deadline) {
		j, _, err := getJob(*server, job.ID)
		if err != nil {
			return err
		}
		if !j.Active() {
			return printOutcome(stdout, j)
		}
		time.Sleep(time.Second)
	}
	return fmt.Errorf("train: job %s still running after %v", job.ID, *timeout)
}

func printOutcome(w io.Writer, j companion.Job) error {
	if j.State == companion.JobFailed {
		return fmt.Errorf("job %s failed: %s", j.ID, j.Error)
	}
	fmt.Fprintf(w, "train: job %s %s: %s %s winner %s promoted=%v (%s)\n", j.ID, j.State, j.Model, j.Version, j.Winner, j.Promoted, j.Decision)
	return nil
}

func getJob(server, id string) (companion.Job, string, error) {
	resp, err := http.Get(strings.TrimRight(server, "/") + "/jobs/" + id)
	if err != nil {
		return companion.Job{}, "", err
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return companion.Job{}, "", fmt.Errorf("job %s: %s: %s", id, resp.Status, strings.TrimSpace(string(data)))
	}
	var r struct {
		Job companion.Job `json:"job"`
		Log string        `json:"log"`
	}
	if err := json.Unmarshal(data, &r); err != nil {
		return companion.Job{}, "", err
	}
	return r.Job, r.Log, nil
}

func cmdJobs(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("takt-cloud jobs", flag.ContinueOnError)
	fs.SetOutput(stderr)
	server := fs.String("server", "http://127.0.0.1:8090", "takt-cloud's HTTP API")
	if err := cli.Parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 1 {
		return cli.Usagef("jobs: want at most one JOB-ID, got %d arguments", fs.NArg())
	}
	if fs.NArg() == 1 {
		j, log, err := getJob(*server, fs.Arg(0))
		if err != nil {
			return err
		}
		js, _ := json.MarshalIndent(j, "", "  ")
		fmt.Fprintf(stdout, "%s\n--- log ---\n%s", js, log)
		return nil
	}
	resp, err := http.Get(strings.TrimRight(*server, "/") + "/jobs")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var jobs []companion.Job
	if err := json.NewDecoder(resp.Body).Decode(&jobs); err != nil {
		return err
	}
	for _, j := range jobs {
		fmt.Fprintf(stdout, "%s  %-9s %-8s %-20s %-10s winner=%s promoted=%v %s\n", j.ID, j.State, j.Trigger, j.Model, j.Version, j.Winner, j.Promoted, j.Error)
	}
	return nil
}
