package plugin

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"
)

// Rollback is a stack of undo steps for an ADD. Push an undo right after each
// acquisition succeeds; call Commit when the whole ADD succeeded; defer
// Undo at the top so that any early return releases what was made, newest
// first:
//
//	var rb plugin.Rollback
//	defer rb.Undo()
//	ip, err := alloc(); if err != nil { return err }
//	if err := rb.Push("ipam", func() error { return release(ip) }); err != nil { return err }
//	...
//	rb.Commit()
//
// It needs no named error result, so a shadowed err cannot skip a release.
type Rollback struct {
	steps     []undoStep
	committed bool
	last      time.Time
}

type undoStep struct {
	what string
	fn   func() error
}

// FailAfterEnv names an environment variable for tests: when it equals the
// name of a step pushed, Push fails right after recording it, as if the ADD
// had failed just after that step. Runtimes never set it.
const FailAfterEnv = "NETNS_CNI_TEST_FAIL_AFTER"

// Push records how to undo something that was just made. It returns an
// error only when FailAfterEnv names this step.
func (r *Rollback) Push(what string, undo func() error) error {
	r.steps = append(r.steps, undoStep{what, undo})
	// With "logLevel": "debug", how long each step of an ADD took.
	now := time.Now()
	if !r.last.IsZero() {
		slog.Debug("step done", "step", what, "took", now.Sub(r.last))
	}
	r.last = now
	if v := os.Getenv(FailAfterEnv); v != "" && v == what {
		return fmt.Errorf("injected failure after step %q", what)
	}
	return nil
}

// Commit keeps everything: a later Undo does nothing.
func (r *Rollback) Commit() { r.committed = true }

// Undo runs every step, newest first, unless Commit was called. It goes on
// past failures, logs them and returns them joined.
func (r *Rollback) Undo() error {
	if r.committed {
		return nil
	}
	var errs []error
	for i := len(r.steps) - 1; i >= 0; i-- {
		s := r.steps[i]
		if err := s.fn(); err != nil {
			slog.Error("rollback step failed", "step", s.what, "error", err)
			errs = append(errs, fmt.Errorf("rollback %s: %w", s.what, err))
		} else {
			slog.Debug("rolled back", "step", s.what)
		}
	}
	r.steps = nil
	return errors.Join(errs...)
}
