package hostport

import (
	"errors"
	"fmt"

	"github.com/google/nftables"
	"github.com/google/nftables/userdata"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// getter reads single set elements by key: NFT_MSG_GETSETELEM without
// NLM_F_DUMP, which the kernel answers with that one element (Linux 4.20
// and later). github.com/google/nftables only dumps a whole set, and a
// dump costs what the set holds: 1,000 mapped pods would make every ADD
// and DEL read them all.
type getter struct{ conn *netlink.Conn }

func newGetter() (*getter, error) {
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, nil)
	if err != nil {
		return nil, fmt.Errorf("nftables: %w", err)
	}
	return &getter{c}, nil
}

func (g *getter) close() { _ = g.conn.Close() }

// found is an element as read back: its data and its comment (the owner).
type found struct {
	val   []byte
	owner string
}

// get returns the element of set in t with key. A missing table, set or
// element is not an error: found is false.
func (g *getter) get(t *nftables.Table, set string, key []byte) (found, bool, error) {
	ae := netlink.NewAttributeEncoder()
	ae.String(unix.NFTA_SET_ELEM_LIST_TABLE, t.Name)
	ae.String(unix.NFTA_SET_ELEM_LIST_SET, set)
	ae.Nested(unix.NFTA_SET_ELEM_LIST_ELEMENTS, func(l *netlink.AttributeEncoder) error {
		l.Nested(unix.NFTA_LIST_ELEM, func(el *netlink.AttributeEncoder) error {
			el.Nested(unix.NFTA_SET_ELEM_KEY, func(k *netlink.AttributeEncoder) error {
				k.Bytes(unix.NFTA_DATA_VALUE, key)
				return nil
			})
			return nil
		})
		return nil
	})
	attrs, err := ae.Encode()
	if err != nil {
		return found{}, false, err
	}
	// nfgenmsg: family, version, resource id.
	data := append([]byte{byte(t.Family), unix.NFNETLINK_V0, 0, 0}, attrs...)
	msgs, err := g.conn.Execute(netlink.Message{
		Header: netlink.Header{Type: netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_GETSETELEM), Flags: netlink.Request},
		Data:   data,
	})
	if errors.Is(err, unix.ENOENT) {
		return found{}, false, nil
	}
	if err != nil {
		return found{}, false, fmt.Errorf("nftables: get element of %s %s: %w", t.Name, set, err)
	}
	for _, m := range msgs {
		if f, ok := decodeElem(m.Data); ok {
			return f, true, nil
		}
	}
	return found{}, false, nil
}

// decodeElem reads the first element of a NEWSETELEM message.
func decodeElem(b []byte) (found, bool) {
	if len(b) < 4 {
		return found{}, false
	}
	ad, err := netlink.NewAttributeDecoder(b[4:])
	if err != nil {
		return found{}, false
	}
	var f found
	ok := false
	for ad.Next() {
		if ad.Type() != unix.NFTA_SET_ELEM_LIST_ELEMENTS {
			continue
		}
		ad.Nested(func(l *netlink.AttributeDecoder) error {
			for l.Next() && !ok {
				l.Nested(func(el *netlink.AttributeDecoder) error {
					for el.Next() {
						switch el.Type() {
						case unix.NFTA_SET_ELEM_DATA:
							el.Nested(func(d *netlink.AttributeDecoder) error {
								for d.Next() {
									if d.Type() == unix.NFTA_DATA_VALUE {
										f.val = d.Bytes()
									}
								}
								return nil
							})
						case unix.NFTA_SET_ELEM_USERDATA:
							f.owner, _ = userdata.GetString(el.Bytes(), userdata.NFTNL_UDATA_SET_ELEM_COMMENT)
						}
					}
					ok = true
					return nil
				})
			}
			return nil
		})
	}
	return f, ok && ad.Err() == nil
}
