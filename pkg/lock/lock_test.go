package lock

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// lockDirT points the locks at a directory of the test's own.
func lockDirT(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "locks")
	t.Setenv(DirEnv, dir)
	return dir
}

func TestAcquire(t *testing.T) {
	dir := lockDirT(t)
	unlock, err := Network("net")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Acquire("nat/net", 50*time.Millisecond); !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), "held by pid "+strconv.Itoa(os.Getpid())) {
		t.Errorf("second Acquire = %v, want ErrBusy naming this process", err)
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
		t.Fatal(err)
	}
	again()
	// Each holder removed its file as it let go.
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		t.Errorf("files left in the lock directory: %v", left)
	}
	if st, err := os.Stat(dir); err != nil || st.Mode().Perm() != 0o700 {
		t.Errorf("lock directory %v, %v: want mode 0700", st, err)
	}
}

// TestWaiterWakesOnRelease: a waiter does not get the lock while it is
// held, and gets it once the holder lets go.
func TestWaiterWakesOnRelease(t *testing.T) {
	lockDirT(t)
	unlock, err := Acquire("w", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	go func() {
		u, err := Acquire("w", 5*time.Second)
		if err == nil {
			u()
		}
		got <- err
	}()
	time.Sleep(20 * time.Millisecond)
	select {
	case err := <-got:
		t.Fatalf("waiter got the lock while it was held: %v", err)
	default:
	}
	unlock()
	if err := <-got; err != nil {
		t.Fatal(err)
	}
}

// TestKilledHolder: a holder killed with its lock (kill -9 mid-ADD) leaves
// its file; the lock is free at once, and the file is taken over.
func TestKilledHolder(t *testing.T) {
	lockDirT(t)
	cmd, _ := hold(t, "k", nil)
	if _, err := Acquire("k", 100*time.Millisecond); !errors.Is(err, ErrBusy) ||
		!strings.Contains(err.Error(), "held by pid "+strconv.Itoa(cmd.Process.Pid)) {
		t.Fatalf("Acquire with another process holding: %v, want ErrBusy naming pid %d", err, cmd.Process.Pid)
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	u, err := Acquire("k", time.Second)
	if err != nil {
		t.Fatalf("after the holder was killed: %v", err)
	}
	u()
}

// TestNoSquatting: a process of another user cannot take a lock, nor hold
// one: the directory is root's alone (the abstract sockets of earlier
// versions let any process bind a lock's name and fail every ADD and DEL
// of the network).
func TestNoSquatting(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("skipped: needs root to run a process as another user (CI runs as root)")
	}
	dir := lockDirT(t)
	for _, d := range []string{filepath.Dir(dir), filepath.Dir(filepath.Dir(dir))} { // the other user runs the test binary from here
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := lockDir(); err != nil {
		t.Fatal(err)
	}
	self := filepath.Join(filepath.Dir(dir), "lock.test")
	b, err := os.ReadFile(os.Args[0])
	if err == nil {
		err = os.WriteFile(self, b, 0o755)
	}
	if err != nil {
		t.Fatal(err)
	}
	// The other user opens the lock's file itself, as a squatter would.
	sum := sha256.Sum256([]byte("nat/squatted"))
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), "NETNS_CNI_LOCK_RAW="+filepath.Join(dir, hex.EncodeToString(sum[:8])))
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "permission denied") {
		t.Fatalf("another user's process took the lock: %v %s", err, out)
	}
	u, err := Acquire("nat/squatted", 100*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	u()
	// A relative lock directory is refused: runtimes in different working
	// directories would not exclude each other.
	t.Setenv(DirEnv, "relative/locks")
	if _, err := Acquire("x", 100*time.Millisecond); err == nil || !strings.Contains(err.Error(), "not an absolute path") {
		t.Fatalf("a relative lock directory: %v", err)
	}
	t.Setenv(DirEnv, dir)
	// A lock directory others may write is refused, not used.
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	if _, err := Acquire("x", 100*time.Millisecond); err == nil || !strings.Contains(err.Error(), "remove it") {
		t.Fatalf("a world-writable lock directory: %v", err)
	}
}

// hold starts this binary holding the lock called name until it is
// killed, and waits until it holds it.
func hold(t *testing.T, name string, env []string) (*exec.Cmd, string) {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(append(os.Environ(), "NETNS_CNI_LOCK_HOLD="+name), env...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "held") {
		t.Fatalf("holder: %q %v", line, err)
	}
	return cmd, line
}

// TestMain makes this binary a lock holder when a test starts it so: it
// takes the lock, says so, and waits to be killed.
func TestMain(m *testing.M) {
	if path := os.Getenv("NETNS_CNI_LOCK_RAW"); path != "" {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
		if err == nil {
			err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX)
		}
		if err != nil {
			os.Stdout.WriteString(err.Error() + "\n")
			os.Exit(1)
		}
		os.Exit(0)
	}
	name := os.Getenv("NETNS_CNI_LOCK_HOLD")
	if name == "" {
		os.Exit(m.Run())
	}
	if _, err := Acquire(name, time.Second); err != nil {
		os.Stdout.WriteString(err.Error() + "\n")
		os.Exit(1)
	}
	os.Stdout.WriteString("held\n")
	time.Sleep(time.Minute)
	os.Exit(0)
}
