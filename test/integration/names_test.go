package integration

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

// TestLongNames: the spec sets no length limit on a network name or a
// container ID, while every kernel object named from them has one (an
// ifalias, an nftables table name or comment, an iptables comment). With
// a 255-character network name and a 128-character container ID both
// plugins ADD, CHECK, GC and DEL, with masquerade on either backend and
// the bridge's MAC check, and leave nothing behind.
func TestLongNames(t *testing.T) {
	w := newWorld(t)
	network := (w.sb.ID + "-" + strings.Repeat("n", 255))[:255]
	id := strings.Repeat("c", 120) + w.sb.ID
	for _, tc := range []struct{ name, plugin, extra string }{
		{"nftables", "veth-ptp", `"ipMasq":true,"ipMasqBackend":"nftables"`},
		{"iptables", "veth-ptp", `"ipMasq":true,"ipMasqBackend":"iptables"`},
		{"macspoofchk", "bridge-nat", `"bridge":"brlong","isGateway":true,"ipMasq":true,"macspoofchk":true,"removeEmptyBridge":true`},
	} {
		t.Run(tc.plugin+"/"+tc.name, func(t *testing.T) {
			pod := w.sb.PodT(t, "p-"+tc.name)
			before := w.hostState(t)
			conf := strings.TrimPrefix(w.ptpConf(tc.plugin, families[2], tc.extra), "{")
			stdin := fmt.Sprintf(`{"cniVersion":"1.1.0","name":%q,%s`, network, conf)
			env := func(cmd string) []string { return w.pluginEnv(cmd, id, pod.Path(), "eth0") }
			r := w.exec(tc.plugin, env("ADD"), stdin)
			if r.exit != 0 {
				t.Fatalf("ADD: %s %s", r.stdout, r.stderr)
			}
			var prev map[string]any
			if err := json.Unmarshal([]byte(r.stdout), &prev); err != nil {
				t.Fatal(err)
			}
			withPrev, _ := json.Marshal(prev)
			checkIn := strings.TrimSuffix(stdin, "}") + `,"prevResult":` + string(withPrev) + "}"
			if r := w.exec(tc.plugin, env("CHECK"), checkIn); r.exit != 0 {
				t.Fatalf("CHECK: %s", r.stdout)
			}
			gcIn := strings.TrimSuffix(stdin, "}") + fmt.Sprintf(`,"cni.dev/valid-attachments":[{"containerID":%q,"ifname":"eth0"}]}`, id)
			if r := w.exec(tc.plugin, w.pluginEnv("GC", "", "", ""), gcIn); r.exit != 0 {
				t.Fatalf("GC keeping it: %s", r.stdout)
			}
			if r := w.exec(tc.plugin, env("CHECK"), checkIn); r.exit != 0 {
				t.Fatalf("GC removed a valid attachment: %s", r.stdout)
			}
			if r := w.exec(tc.plugin, env("DEL"), stdin); r.exit != 0 {
				t.Fatalf("DEL: %s", r.stdout)
			}
			if after := w.settled(t, before); after != before {
				t.Fatalf("left:\n%s", stateDiff(before, after))
			}
		})
	}
}
