package plugin

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
)

// Logging: stdout is the CNI protocol, so logs go to stderr (runtimes keep
// it) or to the file named by "logFile". Quiet by default: only warnings and
// errors, unless "logLevel" asks for more.

var (
	logOut io.Writer = os.Stderr
	// logAttrs go on every record: plugin, command, container, and the
	// network once the config is loaded.
	logAttrs []any
)

// command is CNI_COMMAND of this run.
var command string

// noteConfig logs a remark about the config as it is written (a key
// ignored, a range narrowed): at warn for ADD, where an operator looks
// when a pod misbehaves, at debug for the other verbs — containerd runs
// STATUS every few seconds, and the same warning each time would drown
// its log.
func noteConfig(msg string, args ...any) {
	level := slog.LevelDebug
	if command == "ADD" {
		level = slog.LevelWarn
	}
	slog.Log(context.Background(), level, msg, args...)
}

// withLogAttrs adds attributes to every record from now on.
func withLogAttrs(attrs ...any) {
	logAttrs = append(logAttrs, attrs...)
	slog.SetDefault(slog.Default().With(attrs...))
}

// setupLog points the default slog logger at file (or stderr when empty) at
// level ("debug", "info", "warn", "error"; default "warn"). Records keep
// the attributes set so far (withLogAttrs), so one file can serve many
// plugins and containers. A bad level or a file that cannot be opened is a
// code-7 error, after the logger is set up with warn or stderr instead.
func setupLog(file, level string) error {
	var errs []error
	lvl := slog.LevelWarn
	switch strings.ToLower(level) {
	case "", "warn", "warning":
	case "debug":
		lvl = slog.LevelDebug
	case "info":
		lvl = slog.LevelInfo
	case "error":
		lvl = slog.LevelError
	default:
		errs = append(errs, ConfigError(`"logLevel": must be one of debug, info, warn, error, got %q`, level))
	}
	w := logOut
	if file != "" && !filepath.IsAbs(file) {
		// Relative to what? The runtime's working directory, which differs
		// from runtime to runtime: refused, as ipam.dataDir is.
		errs = append(errs, ConfigError(`"logFile": %q is not an absolute path; give one such as /var/log/netns-cni.log`, file))
		file = ""
	}
	if file != "" {
		rotate(file)
		f, err := os.OpenFile(file, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		if err != nil {
			errs = append(errs, ConfigError(`"logFile": %v`, err))
		} else {
			w = f // closed by the process exit; plugins are short-lived.
		}
	}
	h := slog.NewTextHandler(w, &slog.HandlerOptions{Level: lvl})
	slog.SetDefault(slog.New(h).With(logAttrs...))
	if len(errs) > 0 {
		return errs[0]
	}
	return nil
}

// LogFileMax is the size past which the log file is moved to
// "<logFile>.1" (replacing an older one) and started afresh: the log
// stays under twice this.
const LogFileMax = 10 << 20

// rotate moves file aside when it has grown past LogFileMax. Two plugins
// doing it at once lose at most one old generation.
func rotate(file string) {
	if st, err := os.Stat(file); err == nil && st.Size() > LogFileMax {
		_ = os.Rename(file, file+".1")
	}
}

// quietDefault installs the default logger before any config is read.
func quietDefault(w io.Writer) {
	logOut = w
	logAttrs = nil
	slog.SetDefault(slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelWarn})))
}
