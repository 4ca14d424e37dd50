package ipam

import (
	"errors"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"time"
)

// Reservation is one reserved address as the store holds it.
type Reservation struct {
	Addr  netip.Addr
	Owner Owner
	// Since is when it was made (the file's modification time).
	Since time.Time
}

// ReadReservations lists the network's reservations without taking the
// lock or changing anything: for an operator's inspection, which must not
// trigger the store's own repairs (such as reclaiming what is older than
// the boot). A store that does not exist holds none.
func (c *Config) ReadReservations() ([]Reservation, error) {
	entries, err := os.ReadDir(c.Dir())
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []Reservation
	for _, e := range entries {
		a, err := netip.ParseAddr(e.Name())
		if err != nil || !e.Type().IsRegular() {
			continue // lock, cursors, our metadata
		}
		p := filepath.Join(c.Dir(), e.Name())
		body, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		info, err := e.Info()
		if err != nil {
			continue
		}
		out = append(out, Reservation{Addr: a, Owner: parseOwner(string(body)), Since: info.ModTime()})
	}
	return out, nil
}

// Usage is how full one range set is.
type Usage struct {
	Set        RangeSet
	Used, Size uint64
}

// Usage counts, per range set, the reservations among rs that fall in it.
func (c *Config) Usage(rs []Reservation) []Usage {
	out := make([]Usage, len(c.RangeSets))
	for i, set := range c.RangeSets {
		out[i] = Usage{Set: set, Size: set.Size()}
		for _, r := range rs {
			if set.RangeFor(r.Addr) != nil {
				out[i].Used++
			}
		}
	}
	return out
}

// BootTime is when the machine booted, as the store reckons it.
func BootTime() time.Time {
	_, t := clock()
	return t
}

// Holder returns the owner of a's reservation, reading its one file
// without the lock (files are written whole, so the read sees the old
// owner or the new); ok is false when a is not reserved.
func (c *Config) Holder(a netip.Addr) (o Owner, ok bool, err error) {
	body, err := os.ReadFile(filepath.Join(c.Dir(), a.String()))
	if errors.Is(err, fs.ErrNotExist) {
		return Owner{}, false, nil
	}
	if err != nil {
		return Owner{}, false, err
	}
	return parseOwner(string(body)), true, nil
}

// HeldByOthers reports whether the store's owner index names an owner
// other than o: whether another attachment of the network holds addresses
// here. It reads one directory of small names, without the lock: the index
// may over-list (a release it has not caught up with), never under-list,
// so a false "no" cannot happen while another attachment holds an address.
func (c *Config) HeldByOthers(o Owner) (bool, error) {
	entries, err := os.ReadDir(filepath.Join(c.Dir(), metaName, ownersName))
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	mine, legacy := indexKey(o), indexKey(Owner{ID: o.ID})
	for _, e := range entries {
		if n := e.Name(); n != mine && n != legacy {
			return true, nil
		}
	}
	return false, nil
}
