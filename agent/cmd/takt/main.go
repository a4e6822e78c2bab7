// Command takt is the operator's tool: synthetic parts, model training and inspection,
// verdict store queries and evaluation against ground truth, signed agent releases.
//
// It exits 0 on success and on help, 1 when a command fails, 2 on a usage error.
package main

import (
	"flag"
	"fmt"
	"io"

	"github.com/takt-edge/takt/agent"
	"github.com/takt-edge/takt/cloudsync/cli"
)

func main() { cli.Main("takt", run) }

// commands is takt's command tree; groups without a summary are listed flat ("model train").
func commands() *cli.Command {
	return &cli.Command{Name: "takt", Subs: []*cli.Command{
		{Name: "synth", Summary: "render synthetic parts (training classes or a production run)", Run: cmdSynth},
		{Name: "model", Subs: []*cli.Command{
			{Name: "train", Summary: "train an anomaly model from good (and labeled defect) images (.onnx, or a signed .tar bundle)", Run: cmdModelTrain},
			{Name: "eval", Summary: "image/pixel AUROC, precision/recall/F1 and an HTML report of a model on labeled images", Run: cmdModelEval},
			{Name: "inspect", Summary: "show a model's or bundle's inputs, outputs, metadata and export kind; --write-manifest writes its manifest", Run: cmdModelInspect},
			{Name: "score", Summary: "run a bundle or an exported model on images: one JSON line per image (score, decision, class or boxes, timings)", Run: cmdModelScore},
			{Name: "keygen", Summary: "make an ed25519 key pair for signing model bundles", Run: cmdModelKeygen},
			{Name: "import-tfjs", Summary: "convert a TensorFlow.js graph model to ONNX (a --backbone for model train)", Run: cmdModelImportTFJS},
			{Name: "sign", Summary: "sign a manifest, an ONNX model and golden images into a bundle", Run: cmdModelSign},
			{Name: "verify", Summary: "check a bundle's signature, sha256 sums, model and golden set", Run: cmdModelVerify},
		}},
		{Name: "store", Subs: []*cli.Command{
			{Name: "counts", Summary: "verdict counts of a station's store", Run: cmdStoreCounts},
			{Name: "list", Summary: "verdicts of a station's store as JSON lines", Run: cmdStoreList},
			{Name: "backlog", Summary: "verdicts not yet uploaded: count, bytes, age of the oldest", Run: cmdStoreBacklog},
			{Name: "check", Summary: "verify a stopped agent's store (bbolt pages, outbox, image index)", Run: cmdStoreCheck},
			{Name: "compact", Summary: "shrink a stopped agent's takt.db (bbolt never shrinks by itself)", Run: cmdStoreCompact},
		}},
		{Name: "eval", Summary: "compare stored verdicts with ground-truth labels", Run: cmdEval},
		{Name: "gpu-check", Summary: "run a model on CPU, CUDA and TensorRT: scores against the CPU's, p50/p99 at batch 1 (packaging/gpu-check.sh)", Run: cmdGPUCheck},
		{Name: "alerts", Summary: "print the alerts of stations from an MQTT broker, de-duplicated", Run: cmdAlerts},
		{Name: "firmware", Summary: "signed agent releases: pack, sign, verify, install (A/B, rollback), recover, status, watch",
			Subs: firmwareCommands()},
		cli.VersionCommand("takt", func() string { return agent.Version }),
	}}
}

func run(args []string, stdout, stderr io.Writer) error {
	if len(args) == 1 && args[0] == "--version" {
		args = []string{"version"}
	}
	return cli.Dispatch(commands(), args, stdout, stderr)
}

func newFlags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("takt "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

// parseFlags parses and rejects stray positional arguments beyond want.
func parseFlags(fs *flag.FlagSet, args []string, want int) error {
	if err := cli.Parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != want {
		fs.Usage()
		return &cli.UsageError{Err: fmt.Errorf("%s: want %d argument(s), got %d", fs.Name(), want, fs.NArg())}
	}
	return nil
}
