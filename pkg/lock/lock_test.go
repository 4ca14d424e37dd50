package lock

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

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

// TestSquatterNamed: a process of another user that binds a lock's socket
// (any process in the namespace can) makes Acquire fail at once, naming
// it, instead of after the timeout — also when it listens with no room
// (each failed Acquire leaves a connection in its queue; a blocking
// connect would then hang for good) and when it only binds.
func TestSquatterNamed(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("skipped: needs root to run a process as another user (CI runs as root)")
	}
	dir := t.TempDir()
	for _, d := range []string{dir, filepath.Dir(dir)} { // the squatter runs the test binary from here
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	self := filepath.Join(dir, "lock.test")
	b, err := os.ReadFile(os.Args[0])
	if err == nil {
		err = os.WriteFile(self, b, 0o755)
	}
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ mode, want string }{
		{"listen", "uid 65534"}, {"listen0", "uid 65534"}, {"bind", "takes no connection"},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			sb := nstest.NewT(t)
			var cmd *exec.Cmd
			err := sb.Host.Do(func() error {
				cmd = exec.Command(self)
				cmd.Env = append(os.Environ(), "NETNS_CNI_LOCK_SQUAT=nat/squatted", "NETNS_CNI_LOCK_SQUAT_MODE="+tc.mode)
				cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
				out, err := cmd.StdoutPipe()
				if err != nil {
					return err
				}
				if err := cmd.Start(); err != nil {
					return err
				}
				line, err := bufio.NewReader(out).ReadString('\n')
				if err != nil || !strings.HasPrefix(line, "bound") {
					return errors.Join(err, errors.New("squatter: "+line))
				}
				// The first attempt names the squatter at once (or, for one
				// that only binds, within refusedLimit); a runtime's
				// retries fill a small queue and then wait out their
				// timeout — never hang.
				for i := range 2 {
					start := time.Now()
					_, err = Acquire("nat/squatted", 2*time.Second)
					msg := fmt.Sprint(err)
					if !errors.Is(err, ErrBusy) || (i == 0 && !strings.Contains(msg, tc.want)) || time.Since(start) > 3*time.Second {
						t.Errorf("Acquire %d with a squatter (%s): %v after %v, want ErrBusy, the first naming it", i, tc.mode, err, time.Since(start))
					}
				}
				return nil
			})
			if cmd != nil && cmd.Process != nil {
				_ = cmd.Process.Kill()
				_ = cmd.Wait()
			}
			if err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestFullQueueIsNoSquatter: a holder of our own whose queue is full
// (many waiters, a small somaxconn) is waited for, not named a squatter,
// and the lock is taken once it lets go.
func TestFullQueueIsNoSquatter(t *testing.T) {
	sb := nstest.NewT(t)
	err := sb.Host.Do(func() error {
		fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM, 0)
		if err != nil {
			return err
		}
		if err := unix.Bind(fd, sockAddr("full")); err != nil {
			return err
		}
		if err := unix.Listen(fd, 0); err != nil {
			return err
		}
		for range 2 { // fill the queue
			c, _ := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK, 0)
			_ = unix.Connect(c, sockAddr("full"))
			defer unix.Close(c)
		}
		go func() {
			time.Sleep(300 * time.Millisecond)
			unix.Close(fd)
		}()
		u, err := Acquire("full", 5*time.Second)
		if err != nil {
			return fmt.Errorf("a holder of our own with a full queue: %w", err)
		}
		u()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestMain runs the squatter when TestSquatterNamed starts this binary as
// another user: it binds the lock's socket, says so, and waits to be
// killed.
func TestMain(m *testing.M) {
	name := os.Getenv("NETNS_CNI_LOCK_SQUAT")
	if name == "" {
		os.Exit(m.Run())
	}
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	if err == nil {
		err = unix.Bind(fd, sockAddr(name))
	}
	switch os.Getenv("NETNS_CNI_LOCK_SQUAT_MODE") {
	case "bind":
	case "listen0":
		if err == nil {
			err = unix.Listen(fd, 0)
		}
	default:
		if err == nil {
			err = unix.Listen(fd, 1)
		}
	}
	if err != nil {
		os.Stdout.WriteString(err.Error() + "\n")
		os.Exit(1)
	}
	os.Stdout.WriteString("bound\n")
	time.Sleep(time.Minute)
	os.Exit(0)
}
