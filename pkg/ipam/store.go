package ipam

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/netns-cni/netns-cni/pkg/lock"
)

// The on-disk layout, all under <dataDir>/<network>/:
//
//	10.22.0.5               a reservation: "<containerID>\r\n<ifname>" (host-local's format)
//	last_reserved_ip.0      the round-robin cursor of range set 0 (host-local's)
//	lock                    flock'd by every writer, ours and host-local's
//	.netns-cni/state        our bookkeeping: boot id and the directory stamp
//	.netns-cni/owners/o-…   owner index: the addresses one (container, ifname) holds
//	.netns-cni/tmp/…        files being written, linked or renamed into place
//
// Every file is written whole under a temporary name and then linked (a
// reservation: link fails if the address is taken) or renamed (cursor,
// index, state) into place, so a plugin killed at any instant leaves either
// the old file or the new one, never a torn one, and never an empty
// reservation. Nothing is fsynced on the hot path: after a power loss the
// reboot reconciliation below discards everything from the previous boot
// anyway.
//
// The state record (rewritten in place, one write) holds the boot id, the
// directory stamp, the round-robin cursors and a busy flag set before a
// call changes anything: found set, the call died part-way, and the index
// is rebuilt from the reservation files.
//
// The owner index is a cache over the reservation files, which stay the
// truth. It is written before a reservation is made and pruned after one is
// removed, so it always lists at least what we reserved; every address it
// names is checked against its reservation file before use. Writes by
// another program (the reference host-local) change the directory's
// modification time without updating the index: the stamp in state records
// the directory's times after our last write, and a mismatch makes the next
// call rebuild the index from a full scan, once.
const (
	lockName     = "lock"
	cursorPrefix = "last_reserved_ip."
	metaName     = ".netns-cni"
	ownersName   = "owners"
	tmpName      = "tmp"
	stateName    = "state"
	lineBreak    = "\r\n"
	indexMagic   = "netns-cni owner index v1"
)

// Owner identifies an attachment: a container and its interface name.
type Owner struct {
	ID     string `json:"containerID"`
	IfName string `json:"ifname"`
}

func (o Owner) String() string { return o.ID + "/" + o.IfName }

// content is the reservation file body host-local writes and reads.
func (o Owner) content() string { return o.ID + lineBreak + o.IfName }

// matches reports whether a reservation body belongs to o, including the
// legacy body holding only the container id.
func (o Owner) matches(body string) bool {
	body = strings.TrimSpace(body)
	return body == o.content() || body == strings.TrimSpace(o.ID)
}

// parseOwner reads a reservation body; legacy bodies give an empty IfName.
func parseOwner(body string) Owner {
	id, ifname, _ := strings.Cut(strings.TrimSpace(body), lineBreak)
	return Owner{ID: strings.TrimSpace(id), IfName: ifname}
}

// indexKey names an owner's index file; legacy (id-only) reservations are
// indexed under an empty ifname.
func indexKey(o Owner) string {
	sum := sha256.Sum256([]byte(o.ID + "\x00" + o.IfName))
	return "o-" + hex.EncodeToString(sum[:16])
}

// ErrBusy means the store lock could not be taken in time: CNI code 11.
var ErrBusy = errors.New("store is busy")

// state is the bookkeeping record.
type state struct {
	BootID string `json:"bootID"`
	Stamp  string `json:"stamp"`
	// Cursors are the round-robin positions per range set: the truth for
	// us, since this record is rewritten in place by one write (a killed
	// plugin cannot tear it). last_reserved_ip.N mirrors them for the
	// reference plugin.
	Cursors map[int]string `json:"cursors,omitempty"`
	// Busy is set before a call changes anything and cleared when it ends:
	// found set, a plugin died mid-call and may have left an index entry
	// for an address it never reserved, so the index is rebuilt.
	Busy bool `json:"busy,omitempty"`
}

// store is an open, locked network directory. All file access goes through
// directory descriptors with O_NOFOLLOW, so a symlink planted in the store
// is never followed.
type store struct {
	dir                 string
	dirfd, ownfd, tmpfd int
	lockfd, statefd     int
	// stateLen is the state record's length on disk.
	stateLen int
	bootID   string
	bootTime time.Time
	dirty    bool // reservations or cursors changed: re-stamp on close
	busy     bool // the state says a change is under way
	// st is the state read at open; current says nobody else wrote the
	// directory since (so its cursors are the latest).
	st      state
	current bool
}

// clock tells the store which boot it runs in; tests replace it.
var clock = func() (bootID string, bootTime time.Time) {
	id, _ := os.ReadFile("/proc/sys/kernel/random/boot_id")
	var info unix.Sysinfo_t
	if unix.Sysinfo(&info) == nil {
		return strings.TrimSpace(string(id)), time.Now().Add(-time.Duration(info.Uptime) * time.Second)
	}
	return strings.TrimSpace(string(id)), time.Time{}
}

// openStore opens and locks the network's directory, creating it (0700)
// when missing, and brings the index up to date. Close it to unlock.
func openStore(c *Config) (_ *store, err error) {
	if err := os.MkdirAll(c.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create dataDir: %w", err)
	}
	s := &store{dir: c.Dir(), dirfd: -1, ownfd: -1, tmpfd: -1, lockfd: -1, statefd: -1}
	defer func() {
		if err != nil {
			s.closeFDs()
		}
	}()
	base, err := unix.Open(c.DataDir, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open dataDir %s: %w", c.DataDir, err)
	}
	s.dirfd, err = openDirAt(base, c.Network)
	unix.Close(base)
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", s.dir, err)
	}
	if s.lockfd, err = unix.Openat(s.dirfd, lockName, unix.O_RDONLY|unix.O_CREAT|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600); err != nil {
		return nil, fmt.Errorf("open lock in %s: %w", s.dir, err)
	}
	if err := lockWithTimeout(s.lockfd, c.LockTimeout); err != nil {
		return nil, fmt.Errorf("%s: %w", s.dir, err)
	}
	meta, err := openDirAt(s.dirfd, metaName)
	if err != nil {
		return nil, fmt.Errorf("open %s/%s: %w", s.dir, metaName, err)
	}
	defer unix.Close(meta)
	if s.ownfd, err = openDirAt(meta, ownersName); err != nil {
		return nil, fmt.Errorf("open owner index: %w", err)
	}
	if s.tmpfd, err = openDirAt(meta, tmpName); err != nil {
		return nil, fmt.Errorf("open tmp: %w", err)
	}
	if s.statefd, err = unix.Openat(meta, stateName, unix.O_RDWR|unix.O_CREAT|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600); err != nil {
		return nil, fmt.Errorf("open state: %w", err)
	}
	s.bootID, s.bootTime = clock()
	if err := s.recover(); err != nil {
		return nil, err
	}
	return s, nil
}

// openDirAt opens (making it 0700 when missing) the directory name under
// fd, refusing a symlink.
func openDirAt(fd int, name string) (int, error) {
	if err := unix.Mkdirat(fd, name, 0o700); err != nil && !errors.Is(err, unix.EEXIST) {
		return -1, err
	}
	d, err := unix.Openat(fd, name, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR) {
		return -1, fmt.Errorf("%s is not a directory (a symlink?); refusing to use it", name)
	}
	return d, err
}

// lockWithTimeout takes the store's lock, waiting at most timeout — or
// lock.Retry once a wait of this process (for this lock or one of
// pkg/lock's) timed out: a DEL that found the store busy reading the
// attachment's addresses answers code 11 a second later, not another
// timeout later.
func lockWithTimeout(fd int, timeout time.Duration) error {
	if timeout <= 0 {
		timeout = DefaultLockTimeout
	}
	timeout = lock.Wait(timeout)
	err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB)
	if err == nil {
		return nil
	}
	if !errors.Is(err, unix.EWOULDBLOCK) {
		return fmt.Errorf("lock: %w", err)
	}
	// Wait in the kernel, which wakes us the moment the holder lets go, on
	// a thread of its own so that the wait can be bounded. After a timeout
	// the blocked flock may still succeed; the lock then goes with the
	// descriptor, which the caller closes.
	done := make(chan error, 1)
	go func() {
		for {
			err := unix.Flock(fd, unix.LOCK_EX)
			if !errors.Is(err, unix.EINTR) {
				done <- err
				return
			}
		}
	}()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("lock: %w", err)
		}
		return nil
	case <-time.After(timeout):
		lock.GaveUp()
		return fmt.Errorf("%w: another plugin held the lock for %v; try again", ErrBusy, timeout)
	}
}

// Close stamps the directory when this call changed it, and unlocks.
func (s *store) Close() error {
	var err error
	if s.dirty {
		err = s.writeState()
	}
	s.closeFDs()
	return err
}

func (s *store) closeFDs() {
	for _, fd := range []int{s.statefd, s.tmpfd, s.ownfd, s.dirfd, s.lockfd} { // lock last: it unlocks
		if fd >= 0 {
			unix.Close(fd)
		}
	}
}

// stamp describes the directory's change and modification times: any entry
// made or removed in it, by anyone, changes them.
func (s *store) stamp() (string, error) {
	var st unix.Stat_t
	if err := unix.Fstat(s.dirfd, &st); err != nil {
		return "", err
	}
	return fmt.Sprintf("%d.%d/%d.%d/%d", st.Mtim.Sec, st.Mtim.Nsec, st.Ctim.Sec, st.Ctim.Nsec, st.Size), nil
}

// stateBlock is the unit of the state record's length. The record is
// rewritten in place, without creating a file, padded with spaces to a
// whole number of blocks and never shorter than it was, so that one write
// covers what was there; it grows with the range sets (a cursor each). A
// write torn by a crash cannot match the directory, so it only costs one
// index rebuild.
const stateBlock = 512

// markBusy records, before the first change of a call, that a change is
// under way (one in-place write).
func (s *store) markBusy() error {
	if s.busy {
		return nil
	}
	s.busy, s.dirty = true, true
	return s.putState(state{BootID: s.st.BootID, Stamp: s.st.Stamp, Cursors: s.st.Cursors, Busy: true})
}

func (s *store) writeState() error {
	stamp, err := s.stamp()
	if err != nil {
		return err
	}
	return s.putState(state{BootID: s.bootID, Stamp: stamp, Cursors: s.st.Cursors})
}

func (s *store) putState(st state) error {
	b, _ := json.Marshal(st)
	n := max(s.stateLen, (len(b)+stateBlock-1)/stateBlock*stateBlock)
	rec := bytes.Repeat([]byte{' '}, n)
	copy(rec, b)
	if _, err := unix.Pwrite(s.statefd, rec, 0); err != nil {
		return fmt.Errorf("write state: %w", err)
	}
	s.stateLen = n
	return nil
}

// flushState writes the state record now, under the lock, so that a
// caller can undo its changes if that fails (Close would be too late).
func (s *store) flushState() error {
	if err := s.writeState(); err != nil {
		return err
	}
	s.dirty = false
	return nil
}

// recover runs under the lock before any operation: it clears what a killed
// plugin left in tmp, reclaims reservations from before the current boot,
// and rebuilds the index when someone else changed the directory.
func (s *store) recover() error {
	if err := clearDir(s.tmpfd); err != nil {
		return fmt.Errorf("clear tmp: %w", err)
	}
	var st state
	var fst unix.Stat_t
	if err := unix.Fstat(s.statefd, &fst); err == nil && fst.Size > 0 {
		b := make([]byte, fst.Size)
		if n, err := unix.Pread(s.statefd, b, 0); err == nil {
			_ = json.Unmarshal(b[:n], &st)
		}
		s.stateLen = int(fst.Size)
	}
	stamp, err := s.stamp()
	if err != nil {
		return err
	}
	s.st, s.current = st, st.BootID == s.bootID && st.Stamp == stamp && !st.Busy
	switch {
	case st.BootID != s.bootID:
		// A different boot (or a store we never wrote): every reservation
		// made before this boot belongs to a container that no longer
		// exists. Those made since (by anyone) are kept.
		n, err := s.reclaimBefore(s.bootTime)
		if err != nil {
			return fmt.Errorf("reclaim reservations from before boot: %w", err)
		}
		if n > 0 {
			logf("released %d reservations left from before the last boot in %s", n, s.dir)
		}
		fallthrough
	case st.Stamp != stamp, st.Busy:
		if err := s.rebuildIndex(); err != nil {
			return fmt.Errorf("rebuild owner index: %w", err)
		}
		s.dirty = true
	}
	return nil
}

// logf is where the store reports what it repaired; the plugin points it at
// its logger.
var logf = func(string, ...any) {}

// SetLogger sends the store's repair reports to f.
func SetLogger(f func(format string, args ...any)) { logf = f }

// entry is a reservation found by a scan.
type entry struct {
	addr  netip.Addr
	owner Owner
	mtime time.Time
}

// scan reads every reservation in the directory.
func (s *store) scan() ([]entry, error) {
	names, err := readDirNames(s.dirfd)
	if err != nil {
		return nil, err
	}
	var out []entry
	for _, name := range names {
		a, err := netip.ParseAddr(name)
		if err != nil {
			continue // lock, cursors, our metadata
		}
		body, err := readFileAt(s.dirfd, name)
		if err != nil {
			continue // not a regular file, or gone
		}
		var st unix.Stat_t
		_ = unix.Fstatat(s.dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW)
		out = append(out, entry{addr: a, owner: parseOwner(string(body)), mtime: time.Unix(st.Mtim.Sec, st.Mtim.Nsec)})
	}
	return out, nil
}

func (s *store) reclaimBefore(t time.Time) (int, error) {
	if t.IsZero() {
		return 0, nil
	}
	entries, err := s.scan()
	if err != nil {
		return 0, err
	}
	n := 0
	for _, e := range entries {
		if e.mtime.Before(t) {
			if err := unix.Unlinkat(s.dirfd, e.addr.String(), 0); err == nil {
				n++
			}
		}
	}
	return n, nil
}

// rebuildIndex replaces the owner index with one made from a full scan:
// every owner's entry written first, then the entries of owners that hold
// nothing removed, so that a reader without the lock (HeldByOthers) sees
// at every instant at least the owners that hold addresses — emptying the
// index first let a DEL beside a GC conclude it was the network's last
// attachment and remove the rules of live pods.
func (s *store) rebuildIndex() error {
	entries, err := s.scan()
	if err != nil {
		return err
	}
	byOwner := map[Owner][]netip.Addr{}
	for _, e := range entries {
		byOwner[e.owner] = append(byOwner[e.owner], e.addr)
	}
	keep := map[string]bool{}
	for o, addrs := range byOwner {
		if err := s.writeIndex(o, addrs); err != nil {
			return err
		}
		keep[indexKey(o)] = true
	}
	names, err := readDirNames(s.ownfd)
	if err != nil {
		return err
	}
	for _, n := range names {
		if keep[n] {
			continue
		}
		if err := unix.Unlinkat(s.ownfd, n, 0); err != nil && !errors.Is(err, unix.ENOENT) {
			return err
		}
	}
	return nil
}

// readIndex returns the addresses the index lists for o (unverified).
func (s *store) readIndex(o Owner) ([]netip.Addr, error) {
	b, err := readFileAt(s.ownfd, indexKey(o))
	if errors.Is(err, unix.ENOENT) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	var out []netip.Addr
	for line := 0; sc.Scan(); line++ {
		if line < 3 { // magic, id, ifname
			continue
		}
		if a, err := netip.ParseAddr(sc.Text()); err == nil {
			out = append(out, a)
		}
	}
	return out, nil
}

// writeIndex records the addresses o holds; none removes the entry. The
// body starts with a magic line so that it can never read as a
// reservation to host-local, which walks subdirectories too.
func (s *store) writeIndex(o Owner, addrs []netip.Addr) error {
	if err := s.markBusy(); err != nil {
		return err
	}
	if len(addrs) == 0 {
		err := unix.Unlinkat(s.ownfd, indexKey(o), 0)
		if errors.Is(err, unix.ENOENT) {
			return nil
		}
		return err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s\n%s\n%s\n", indexMagic, o.ID, o.IfName)
	for _, a := range addrs {
		b.WriteString(a.String() + "\n")
	}
	return s.replaceAt(s.ownfd, indexKey(o), []byte(b.String()))
}

// holder returns who holds a (zero Owner and false when nobody does).
func (s *store) holder(a netip.Addr) (Owner, bool, error) {
	body, err := readFileAt(s.dirfd, a.String())
	if errors.Is(err, unix.ENOENT) {
		return Owner{}, false, nil
	}
	if err != nil {
		return Owner{}, false, err
	}
	return parseOwner(string(body)), true, nil
}

// taken reports whether a reservation file exists for a, without reading it.
func (s *store) taken(a netip.Addr) (bool, error) {
	var st unix.Stat_t
	err := unix.Fstatat(s.dirfd, a.String(), &st, unix.AT_SYMLINK_NOFOLLOW)
	if errors.Is(err, unix.ENOENT) {
		return false, nil
	}
	return err == nil, err
}

// held returns the addresses o verifiably holds: those its index names
// whose reservation file says o (or the legacy id-only form).
func (s *store) held(o Owner) ([]netip.Addr, error) {
	var out []netip.Addr
	for _, key := range []Owner{o, {ID: o.ID}} {
		listed, err := s.readIndex(key)
		if err != nil {
			return nil, err
		}
		for _, a := range listed {
			body, err := readFileAt(s.dirfd, a.String())
			if err != nil {
				continue
			}
			if key.IfName == "" && strings.Contains(strings.TrimSpace(string(body)), lineBreak) {
				continue // the legacy key matches only legacy bodies
			}
			if o.matches(string(body)) {
				out = append(out, a)
			}
		}
	}
	return out, nil
}

// reserve makes the reservation file for a, atomically; false when a is
// already taken.
func (s *store) reserve(a netip.Addr, o Owner) (bool, error) {
	if err := s.markBusy(); err != nil {
		return false, err
	}
	tmp, err := s.writeTmp([]byte(o.content()))
	if err != nil {
		return false, err
	}
	defer func() { _ = unix.Unlinkat(s.tmpfd, tmp, 0) }()
	err = unix.Linkat(s.tmpfd, tmp, s.dirfd, a.String(), 0)
	if errors.Is(err, unix.EEXIST) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("reserve %s: %w", a, err)
	}
	s.dirty = true
	return true, nil
}

// unreserve removes a's reservation file if it belongs to o.
func (s *store) unreserve(a netip.Addr, o Owner) error {
	body, err := readFileAt(s.dirfd, a.String())
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return err
	}
	if !o.matches(string(body)) {
		return nil // someone else's now
	}
	if err := s.markBusy(); err != nil {
		return err
	}
	if err := unix.Unlinkat(s.dirfd, a.String(), 0); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("release %s: %w", a, err)
	}
	s.dirty = true
	return nil
}

func (s *store) cursor(set int) netip.Addr {
	if c, ok := s.st.Cursors[set]; ok && s.current {
		if a, err := netip.ParseAddr(c); err == nil {
			return a
		}
	}
	// Another writer (the reference plugin) was here, or no state yet.
	b, err := readFileAt(s.dirfd, cursorPrefix+strconv.Itoa(set))
	if err != nil {
		return netip.Addr{}
	}
	a, _ := netip.ParseAddr(strings.TrimSpace(string(b)))
	return a
}

// setCursor records the cursor in the state (written on Close) and mirrors
// it into last_reserved_ip.N in place, as the reference writes it: no new
// file per allocation. A kill between the write and the truncate can leave
// that mirror off by a digit; it only steers the reference's round-robin,
// never ours.
func (s *store) setCursor(set int, a netip.Addr) error {
	if err := s.markBusy(); err != nil {
		return err
	}
	if s.st.Cursors == nil {
		s.st.Cursors = map[int]string{}
	}
	s.st.Cursors[set] = a.String()
	name := cursorPrefix + strconv.Itoa(set)
	flags := unix.O_WRONLY | unix.O_CREAT | unix.O_NOFOLLOW | unix.O_CLOEXEC | unix.O_NONBLOCK
	fd, err := unix.Openat(s.dirfd, name, flags, 0o600)
	if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.EISDIR) || errors.Is(err, unix.ENXIO) {
		// Something planted where the cursor goes: replace it, never follow it.
		_ = unix.Unlinkat(s.dirfd, name, 0)
		_ = unix.Unlinkat(s.dirfd, name, unix.AT_REMOVEDIR)
		fd, err = unix.Openat(s.dirfd, name, flags, 0o600)
	}
	if err != nil {
		return fmt.Errorf("open cursor %d: %w", set, err)
	}
	defer unix.Close(fd)
	v := []byte(a.String())
	if _, err := unix.Pwrite(fd, v, 0); err != nil {
		return fmt.Errorf("write cursor %d: %w", set, err)
	}
	return unix.Ftruncate(fd, int64(len(v)))
}

// writeTmp writes data to a new file in tmp and returns its name.
func (s *store) writeTmp(data []byte) (string, error) {
	var rnd [8]byte
	_, _ = rand.Read(rnd[:])
	name := hex.EncodeToString(rnd[:])
	fd, err := unix.Openat(s.tmpfd, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return "", fmt.Errorf("create temporary file: %w", err)
	}
	_, err = unix.Write(fd, data)
	unix.Close(fd)
	if err != nil {
		_ = unix.Unlinkat(s.tmpfd, name, 0)
		return "", fmt.Errorf("write temporary file: %w", err)
	}
	return name, nil
}

// replaceAt atomically replaces dirfd/name with data.
func (s *store) replaceAt(dirfd int, name string, data []byte) error {
	tmp, err := s.writeTmp(data)
	if err != nil {
		return err
	}
	if err := unix.Renameat(s.tmpfd, tmp, dirfd, name); err != nil {
		_ = unix.Unlinkat(s.tmpfd, tmp, 0)
		return fmt.Errorf("replace %s: %w", name, err)
	}
	return nil
}

// readFileAt reads a regular file under dirfd without following symlinks.
func readFileAt(dirfd int, name string) ([]byte, error) {
	fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file", name)
	}
	return io.ReadAll(io.LimitReader(f, 64<<10))
}

func readDirNames(dirfd int) ([]string, error) {
	fd, err := unix.Openat(dirfd, ".", unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), ".")
	defer f.Close()
	return f.Readdirnames(-1)
}

func clearDir(dirfd int) error {
	names, err := readDirNames(dirfd)
	if err != nil {
		return err
	}
	for _, n := range names {
		if err := unix.Unlinkat(dirfd, n, 0); err != nil && !errors.Is(err, unix.ENOENT) {
			return err
		}
	}
	return nil
}
