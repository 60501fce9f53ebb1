package daemon

import (
	"fmt"
	"os"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// NewLogger returns a logger writing to standard error at cfg.Level, in cfg.Format: a
// console line (ISO 8601 time, no colors) or a JSON object per entry. Format "auto"
// means console when isTerminal (standard error is a terminal), JSON otherwise.
func NewLogger(cfg LogConfig, isTerminal bool) (*zap.Logger, error) {
	return newLogger(cfg, isTerminal, zapcore.Lock(os.Stderr))
}

func newLogger(cfg LogConfig, isTerminal bool, w zapcore.WriteSyncer) (*zap.Logger, error) {
	level, err := parseLevel(cfg.Level)
	if err != nil {
		return nil, fmt.Errorf("log.level: %w", err)
	}
	ec := zapcore.EncoderConfig{
		TimeKey:        "time",
		LevelKey:       "level",
		NameKey:        "logger",
		MessageKey:     "msg",
		StacktraceKey:  "stacktrace",
		LineEnding:     zapcore.DefaultLineEnding,
		EncodeTime:     zapcore.ISO8601TimeEncoder,
		EncodeDuration: zapcore.StringDurationEncoder,
		EncodeName:     zapcore.FullNameEncoder,
	}
	var enc zapcore.Encoder
	switch cfg.Format {
	case "console":
		isTerminal = true
	case "json":
		isTerminal = false
	case "auto", "":
	default:
		return nil, fmt.Errorf("log.format: unknown format %q: want auto, console or json", cfg.Format)
	}
	if isTerminal {
		ec.EncodeLevel = zapcore.CapitalLevelEncoder
		enc = zapcore.NewConsoleEncoder(ec)
	} else {
		ec.EncodeLevel = zapcore.LowercaseLevelEncoder
		enc = zapcore.NewJSONEncoder(ec)
	}
	return zap.New(zapcore.NewCore(enc, w, level), zap.ErrorOutput(w)), nil
}

// parseLevel accepts the four documented levels; "" means info.
func parseLevel(s string) (zapcore.Level, error) {
	switch s {
	case "debug":
		return zapcore.DebugLevel, nil
	case "info", "":
		return zapcore.InfoLevel, nil
	case "warn":
		return zapcore.WarnLevel, nil
	case "error":
		return zapcore.ErrorLevel, nil
	}
	return 0, fmt.Errorf("unknown level %q: want debug, info, warn or error", s)
}
