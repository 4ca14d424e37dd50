package lock

import (
	"errors"
	"testing"
	"time"

	"github.com/netns-cni/netns-cni/pkg/nsutil/nstest"
)

func TestAcquire(t *testing.T) {
	sb := nstest.NewT(t) // abstract sockets belong to a network namespace
	err := sb.Host.Do(func() error {
		unlock, err := Network("net")
		if err != nil {
			return err
		}
		if _, err := Acquire("nat/net", 50*time.Millisecond); !errors.Is(err, ErrBusy) {
			t.Errorf("second Acquire = %v, want ErrBusy", err)
		}
		other, err := Network("other")
		if err != nil {
			t.Errorf("lock of another network: %v", err)
		} else {
			other()
		}
		if br, err := Bridge("net"); err != nil {
			t.Errorf("a bridge named like a network: %v", err)
		} else {
			br()
		}
		unlock()
		again, err := Acquire("nat/net", 50*time.Millisecond)
		if err != nil {
			return err
		}
		again()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestWaiterWakesOnRelease: a waiter does not get the lock while it is
// held, and gets it once the holder lets go.
func TestWaiterWakesOnRelease(t *testing.T) {
	sb := nstest.NewT(t)
	err := sb.Host.Do(func() error {
		unlock, err := Acquire("w", time.Second)
		if err != nil {
			return err
		}
		got := make(chan error, 1)
		go func() {
			// The abstract socket's namespace is the thread's: wait in the sandbox too.
			got <- sb.Host.Do(func() error {
				u, err := Acquire("w", 5*time.Second)
				if err == nil {
					u()
				}
				return err
			})
		}()
		time.Sleep(20 * time.Millisecond)
		select {
		case err := <-got:
			t.Errorf("waiter got the lock while it was held: %v", err)
		default:
		}
		unlock()
		return <-got
	})
	if err != nil {
		t.Fatal(err)
	}
}
