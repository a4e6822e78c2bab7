package firmware

import (
	"flag"
	"os"
	"testing"
)

// TestMain runs up to 6 parallel subtests unless -parallel is given: the crash cases wait on
// child processes, health polls and fsync, not on the CPU.
func TestMain(m *testing.M) {
	flag.Parse()
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == "test.parallel" })
	if !set {
		flag.Set("test.parallel", "6")
	}
	os.Exit(m.Run())
}
