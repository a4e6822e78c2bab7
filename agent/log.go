package agent

import (
	"io"
	"time"

	"github.com/rs/zerolog"
)

// NewLogger builds the agent's root logger from cfg; components derive children from it.
func NewLogger(cfg LogConfig, w io.Writer) zerolog.Logger {
	level, err := zerolog.ParseLevel(cfg.Level)
	if err != nil {
		level = zerolog.InfoLevel
	}
	if cfg.Format == "console" {
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: time.TimeOnly + ".000"}
	}
	return zerolog.New(w).Level(level).With().Timestamp().Logger()
}
