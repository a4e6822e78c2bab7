//go:build !cgo

package camera

// Open fails without cgo: every source reads through OpenCV.
func Open(cfg Config, opts ...Option) (*Camera, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return nil, ErrNoCgo
}

// Encode fails without cgo: encoding goes through OpenCV.
func Encode(f Frame, format string, quality int) ([]byte, error) { return nil, ErrNoCgo }
