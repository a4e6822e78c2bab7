// Command takt is the operator's tool: synthetic parts, model training and inspection,
// verdict store queries and evaluation against ground truth.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
)

const usage = `usage: takt <command> [flags]

commands:
  synth          render synthetic parts (training classes or a production run)
  model train    train an anomaly model from good (and labeled defect) images (.onnx, or a signed .tar bundle)
  model eval     image/pixel AUROC, precision/recall/F1 and an HTML report of a model on labeled images
  model inspect  show a model's or bundle's inputs, outputs, manifest and Takt metadata
  model keygen   make an ed25519 key pair for signing model bundles
  model import-tfjs  convert a TensorFlow.js graph model to ONNX (a --backbone for model train)
  model sign     sign a manifest, an ONNX model and golden images into a bundle
  model verify   check a bundle's signature, sha256 sums, model and golden set
  store counts   verdict counts of a station's store
  store list     verdicts of a station's store as JSON lines
  store backlog  verdicts not yet uploaded: count, bytes, age of the oldest
  store check    verify a stopped agent's store (bbolt pages, outbox, image index)
  store compact  shrink a stopped agent's takt.db (bbolt never shrinks by itself)
  eval           compare stored verdicts with ground-truth labels
  alerts         print the alerts of stations from an MQTT broker, de-duplicated
  firmware       signed agent releases: pack, sign, verify, install (A/B, rollback), recover, status

Run "takt <command> -h" for a command's flags.
`

// errUsage marks an error whose message is the usage already printed.
var errUsage = errors.New("usage")

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, errUsage) && !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "takt:", err)
		}
		os.Exit(2)
	}
}

func run(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errUsage
	}
	sub := func(name string) (string, []string, error) {
		if len(args) < 2 {
			fmt.Fprint(stderr, usage)
			return "", nil, errUsage
		}
		return name + " " + args[1], args[2:], nil
	}
	var cmd string
	rest := args[1:]
	switch args[0] {
	case "model", "store":
		var err error
		if cmd, rest, err = sub(args[0]); err != nil {
			return err
		}
	default:
		cmd = args[0]
	}
	switch cmd {
	case "synth":
		return cmdSynth(rest, stdout, stderr)
	case "model train":
		return cmdModelTrain(rest, stdout, stderr)
	case "model eval":
		return cmdModelEval(rest, stdout, stderr)
	case "model inspect":
		return cmdModelInspect(rest, stdout, stderr)
	case "model keygen":
		return cmdModelKeygen(rest, stdout, stderr)
	case "model import-tfjs":
		return cmdModelImportTFJS(rest, stdout, stderr)
	case "model sign":
		return cmdModelSign(rest, stdout, stderr)
	case "model verify":
		return cmdModelVerify(rest, stdout, stderr)
	case "store counts":
		return cmdStoreCounts(rest, stdout, stderr)
	case "store list":
		return cmdStoreList(rest, stdout, stderr)
	case "store backlog":
		return cmdStoreBacklog(rest, stdout, stderr)
	case "store check":
		return cmdStoreCheck(rest, stdout, stderr)
	case "store compact":
		return cmdStoreCompact(rest, stdout, stderr)
	case "alerts":
		return cmdAlerts(rest, stdout, stderr)
	case "eval":
		return cmdEval(rest, stdout, stderr)
	case "firmware":
		return cmdFirmware(rest, stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprintf(stderr, "takt: unknown command %q\n\n%s", cmd, usage)
	return errUsage
}

func newFlags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("takt "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

// parseFlags parses and rejects stray positional arguments beyond want.
func parseFlags(fs *flag.FlagSet, args []string, want int) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != want {
		fs.Usage()
		return fmt.Errorf("%s: want %d argument(s), got %d", fs.Name(), want, fs.NArg())
	}
	return nil
}
