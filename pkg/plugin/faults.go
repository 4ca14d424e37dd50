//go:build !faultinject

package plugin

// injectFault is the fault-injection hook: in the binaries users install
// it does nothing, and nothing in the environment can change that. The
// test binaries are built with the faultinject tag (faults_inject.go).
func injectFault(Step, []Step) error { return nil }

// listSteps is the fault-injection builds' step listing; never here.
func listSteps(Info) bool { return false }
