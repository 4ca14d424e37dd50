package plugin

import (
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// Step names one step of an ADD: in logs, in rollback errors, and for the
// fault-injection tests, which make ADD fail right after each step in turn
// and check that nothing is left behind.
type Step string

// The steps the common ADD runs itself, in order; a driver's steps run
// between StepIPAM and StepVeth (Preparer) and after StepVeth (Setup).
const (
	// StepIPAM reserves the addresses; undone by releasing them.
	StepIPAM Step = "ipam"
	// StepVeth makes the veth pair, its container end born in the
	// container's namespace, and sets lo up there; undone by deleting the
	// pair, which takes the addresses and routes on it along.
	StepVeth Step = "veth"
	// StepForwarding turns IP forwarding on for the families in use; never
	// undone (other networks may rely on it).
	StepForwarding Step = "forwarding"
	// StepMasquerade makes sure the network's masquerade rules exist;
	// undone by removing them unless another attachment of the network is
	// left.
	StepMasquerade Step = "masquerade"
	// StepForwardAccept makes sure the filter FORWARD chain accepts the
	// network's traffic (forwardAccept); undone like StepMasquerade.
	StepForwardAccept Step = "forward-accept"
)

// CommonSteps are the steps of every veth plugin's ADD.
var CommonSteps = []Step{StepIPAM, StepVeth, StepForwarding, StepMasquerade, StepForwardAccept, StepPortMappings}

// steps runs an ADD's steps and keeps their undos: Run one step after
// another; on any return before Commit, Undo releases everything the steps
// made, newest first. Nothing depends on a named error result, so a
// shadowed err cannot skip a release (the reference ptp leaks an address
// that way).
type steps struct {
	undo      []undoStep
	committed bool
	last      time.Time
	// declared are the steps this plugin may run (fault-injection builds
	// check each run against them).
	declared []Step
}

type undoStep struct {
	step Step
	fn   func() error
}

// run runs do as step and keeps the undo it returns for Undo: the undo of
// whatever do made, even when it failed part-way; nil when there is
// nothing of its own to undo.
func (s *steps) run(step Step, do func() (undo func() error, err error)) error {
	undo, err := do()
	if undo != nil {
		s.undo = append(s.undo, undoStep{step, undo})
	}
	if err != nil {
		return err
	}
	now := time.Now()
	slog.Debug("step done", "step", step, "took", now.Sub(s.last))
	s.last = now
	return injectFault(step, s.declared)
}

// commit keeps everything: a later Undo does nothing.
func (s *steps) commit() { s.committed = true }

// Undo runs every kept undo, newest first, unless committed. It goes on
// past failures, logs them and returns them joined.
func (s *steps) Undo() error {
	if s.committed {
		return nil
	}
	var errs []error
	for i := len(s.undo) - 1; i >= 0; i-- {
		u := s.undo[i]
		if err := u.fn(); err != nil {
			slog.Error("rollback step failed", "step", u.step, "error", err)
			errs = append(errs, fmt.Errorf("rollback %s: %w", u.step, err))
		} else {
			slog.Debug("rolled back", "step", u.step)
		}
	}
	s.undo = nil
	return errors.Join(errs...)
}
