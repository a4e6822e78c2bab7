//go:build !cgo

package backbone

import (
	"fmt"

	"github.com/takt-edge/takt/models"
)

// Resolve fails without cgo: the backbone is run in ONNX Runtime to learn its
// feature shape.
func Resolve(o Options, aspect float64) (*Backbone, error) {
	return nil, fmt.Errorf("backbone: %w", models.ErrNoCgo)
}
