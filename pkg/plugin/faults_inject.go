//go:build faultinject

package plugin

import (
	"encoding/json"
	"fmt"
	"os"
	"slices"
)

// The fault-injection hooks of the test binaries (go build -tags
// faultinject). The binaries users install never contain them.
const (
	// FailAfterEnv names a step: ADD fails right after that step succeeded,
	// as if the next one had failed.
	FailAfterEnv = "NETNS_CNI_TEST_FAIL_AFTER"
	// ListStepsEnv set to 1 makes the binary print the steps its ADD may
	// take, as a JSON list, and exit: the tests iterate over them.
	ListStepsEnv = "NETNS_CNI_TEST_LIST_STEPS"
)

func injectFault(step Step, declared []Step) error {
	if !slices.Contains(declared, step) {
		return fmt.Errorf("step %q runs but is not declared in the plugin's Info.Steps", step)
	}
	if os.Getenv(FailAfterEnv) == string(step) {
		return fmt.Errorf("injected failure after step %q", step)
	}
	return nil
}

func listSteps(info Info) bool {
	if os.Getenv(ListStepsEnv) != "1" {
		return false
	}
	_ = json.NewEncoder(os.Stdout).Encode(info.steps())
	return true
}
