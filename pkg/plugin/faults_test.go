//go:build !faultinject

package plugin

import "testing"

// TestNoFaultInjectionInReleaseBuilds: in the binaries users install, the
// fault-injection variable does nothing.
func TestNoFaultInjectionInReleaseBuilds(t *testing.T) {
	t.Setenv("NETNS_CNI_TEST_FAIL_AFTER", string(StepIPAM))
	t.Setenv("NETNS_CNI_TEST_LIST_STEPS", "1")
	s := steps{declared: CommonSteps}
	if err := s.run(StepIPAM, func() (func() error, error) { return nil, nil }); err != nil {
		t.Fatalf("a release build injected a failure: %v", err)
	}
	if listSteps(Info{}) {
		t.Fatal("a release build lists its steps")
	}
}
