package plugin

import (
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"sort"
	"strings"

	"github.com/netns-cni/netns-cni/pkg/ipam"
)

// commonKeys are keys any plugin config may carry that no config struct
// here declares: runtimes and libcni add them. libcni's GC passes the
// valid attachments under the spec's key and again under
// "cni.dev/attachments", a draft's name.
var commonKeys = []string{"ipam", "cniVersions", "runtimeConfig", "args", "cni.dev/attachments"}

// UnknownKeys lists the top-level keys of a config (data) that are not in
// known (nor keys any config may carry), each with the known key it most
// likely meant, if any: `"ipMask": unknown key; did you mean "ipMasq"?`;
// and, when the "ipam" object is the in-process host-local's, its keys
// and its ranges' that host-local does not read ("ipam.rangeStrat").
// Keys are never an error (conflists carry keys for other tools); they
// are named, as a typo silently changes nothing.
func UnknownKeys(data []byte, known []string) []string {
	var raw map[string]json.RawMessage
	if json.Unmarshal(data, &raw) != nil {
		return nil
	}
	out := unknownKeys("", raw, append(slices.Clone(known), commonKeys...))
	out = append(out, hostLocalUnknownKeys(raw["ipam"])...)
	sort.Strings(out)
	return out
}

// hostLocalUnknownKeys is UnknownKeys for an "ipam" object of type
// host-local; another IPAM plugin reads keys of its own.
func hostLocalUnknownKeys(data json.RawMessage) []string {
	var obj map[string]json.RawMessage
	if json.Unmarshal(data, &obj) != nil {
		return nil
	}
	var typ string
	if json.Unmarshal(obj["type"], &typ) != nil || typ != "host-local" {
		return nil
	}
	ipamObject, rangeObject := ipam.KeySchemas()
	out := unknownKeys("ipam.", obj, JSONKeys(ipamObject))
	var sets [][]map[string]json.RawMessage
	if json.Unmarshal(obj["ranges"], &sets) == nil {
		for i, set := range sets {
			for j, r := range set {
				out = append(out, unknownKeys(fmt.Sprintf("ipam.ranges[%d][%d].", i, j), r, JSONKeys(rangeObject))...)
			}
		}
	}
	return out
}

// unknownKeys names the keys of raw not in known, each under prefix.
func unknownKeys(prefix string, raw map[string]json.RawMessage, known []string) []string {
	var out []string
	for k := range raw {
		if slices.Contains(known, k) {
			continue
		}
		msg := fmt.Sprintf("%q: unknown key", prefix+k)
		if m := closest(k, known); m != "" {
			msg += fmt.Sprintf("; did you mean %q?", prefix+m)
		}
		out = append(out, msg)
	}
	return out
}

// warnUnknownKeys logs UnknownKeys of conf's type (see noteConfig).
func warnUnknownKeys(data []byte, conf any) {
	for _, m := range UnknownKeys(data, JSONKeys(conf)) {
		noteConfig("config key ignored", "problem", m)
	}
}

// JSONKeys are the JSON names of the fields of v's struct type, embedded
// structs' included.
func JSONKeys(v any) []string { return jsonKeys(reflect.TypeOf(v)) }

func jsonKeys(t reflect.Type) []string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct {
		return nil
	}
	var keys []string
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		name, _, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" {
			keys = append(keys, jsonKeys(f.Type)...)
			continue
		}
		if name == "-" || !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		keys = append(keys, name)
	}
	return keys
}

// closest is the known key k most likely meant: the same but for case, or
// within two edits; "" when none is that close.
func closest(k string, known []string) string {
	best, dist := "", 3
	for _, c := range known {
		if strings.EqualFold(c, k) {
			return c
		}
		if d := editDistance(strings.ToLower(k), strings.ToLower(c)); d < dist {
			best, dist = c, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}
