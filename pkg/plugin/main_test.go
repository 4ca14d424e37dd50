package plugin

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/google/go-cmp/cmp"
)

type testConf struct {
	NetConf
	MTU int `json:"mtu"`
}

func (c *testConf) SetDefaults() {
	if c.MTU == 0 {
		c.MTU = 1500
	}
}

func (c *testConf) Validate() []error {
	var errs []error
	if c.MTU < 68 {
		errs = append(errs, errors.New(`"mtu": must be 68-65535`))
	}
	return errs
}

// recorder is a plugin whose verbs record that they ran.
func recorder(ran *[]string) Plugin {
	rec := func(verb string) func(*skel.CmdArgs) error {
		return func(a *skel.CmdArgs) error {
			*ran = append(*ran, verb)
			_, err := Load[testConf](a)
			return err
		}
	}
	return Plugin{
		Name: "test", About: "test plugin",
		Add: func(a *skel.CmdArgs) (types.Result, error) {
			*ran = append(*ran, "ADD")
			if _, err := Load[testConf](a); err != nil {
				return nil, err
			}
			ip, _ := types.ParseCIDR("10.0.0.2/24")
			return &current.Result{
				CNIVersion: current.ImplementedSpecVersion,
				Interfaces: []*current.Interface{{Name: "eth0", Sandbox: "/x"}},
				IPs:        []*current.IPConfig{{Interface: IfaceIndex(0), Address: *ip}},
			}, nil
		},
		Del: rec("DEL"), Check: rec("CHECK"), GC: rec("GC"), Status: rec("STATUS"),
	}
}

func env(kv ...string) func(string) string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) string { return m[k] }
}

var fullEnv = []string{"CNI_CONTAINERID", "c1", "CNI_NETNS", "/var/run/netns/x", "CNI_IFNAME", "eth0", "CNI_PATH", "/opt/cni/bin"}

func withCmd(cmd string, kv ...string) func(string) string {
	return env(append(append([]string{"CNI_COMMAND", cmd}, fullEnv...), kv...)...)
}

func TestRunErrors(t *testing.T) {
	const good = `{"cniVersion":"1.0.0","name":"net","type":"test"}`
	for _, tc := range []struct {
		name    string
		env     func(string) string
		stdin   string
		code    uint
		msgHas  string
		version string
	}{
		{"unknown command", withCmd("FROB"), good, 4, `unknown command "FROB"`, "1.1.0"},
		{"missing containerid", env("CNI_COMMAND", "ADD", "CNI_NETNS", "/x", "CNI_IFNAME", "eth0", "CNI_PATH", "/p"), good, 4, "CNI_CONTAINERID", "1.0.0"},
		{"missing netns and ifname", env("CNI_COMMAND", "ADD", "CNI_CONTAINERID", "c", "CNI_PATH", "/p"), good, 4, "CNI_NETNS, CNI_IFNAME", "1.0.0"},
		{"missing ifname on check", env("CNI_COMMAND", "CHECK", "CNI_CONTAINERID", "c", "CNI_NETNS", "/x", "CNI_PATH", "/p"), good, 4, "CNI_IFNAME", "1.0.0"},
		{"long ifname", withCmd("ADD", "CNI_IFNAME", "abcdefghijklmnop"), good, 4, "CNI_IFNAME", "1.0.0"},
		{"ifname with slash", withCmd("ADD", "CNI_IFNAME", "a/b"), good, 4, "CNI_IFNAME", "1.0.0"},
		{"ifname template", withCmd("ADD", "CNI_IFNAME", "eth%d"), good, 4, `CNI_IFNAME "eth%d": '%' makes the kernel pick the name`, "1.0.0"},
		{"CNI_ARGS without =", withCmd("ADD", "CNI_ARGS", "IgnoreUnknown=1;garbage"), good, 4, `CNI_ARGS "IgnoreUnknown=1;garbage": "garbage" is not KEY=VALUE`, "1.0.0"},
		{"gc without path", env("CNI_COMMAND", "GC"), `{"cniVersion":"1.1.0","name":"n"}`, 4, "CNI_PATH", "1.1.0"},
		{"bad container id", withCmd("ADD", "CNI_CONTAINERID", "-bad"), good, 4, "CNI_CONTAINERID", "1.0.0"},
		{"malformed json", withCmd("ADD"), `{"cniVersion":`, 6, "decode network config", "1.1.0"},
		{"no name", withCmd("ADD"), `{"cniVersion":"1.0.0","type":"t"}`, 7, `"name": missing`, "1.0.0"},
		{"name with slash", withCmd("ADD"), `{"cniVersion":"1.0.0","name":"a/b"}`, 7, `"name"`, "1.0.0"},
		{"name dot dot", withCmd("ADD"), `{"cniVersion":"1.0.0","name":".."}`, 7, `"name"`, "1.0.0"},
		{"unsupported version", withCmd("ADD"), `{"cniVersion":"9.9.9","name":"n"}`, 1, `"cniVersion": "9.9.9" is not supported`, "9.9.9"},
		{"check too old", withCmd("CHECK"), `{"cniVersion":"0.3.1","name":"n"}`, 1, "CHECK needs cniVersion 0.4.0", "0.3.1"},
		{"gc too old", withCmd("GC"), `{"cniVersion":"1.0.0","name":"n"}`, 1, "GC needs cniVersion 1.1.0", "1.0.0"},
		{"status too old", withCmd("STATUS"), `{"cniVersion":"1.0.0","name":"n"}`, 1, "STATUS needs cniVersion 1.1.0", "1.0.0"},
		{"bad type", withCmd("ADD"), `{"cniVersion":"1.0.0","name":"n","mtu":"big"}`, 6, `"mtu": want int, got string`, "1.0.0"},
		{"invalid value", withCmd("ADD"), `{"cniVersion":"1.0.0","name":"n","mtu":9}`, 7, `"mtu": must be 68-65535`, "1.0.0"},
		{"bad loglevel", withCmd("DEL"), `{"cniVersion":"1.0.0","name":"n","logLevel":"loud"}`, 7, `"logLevel"`, "1.0.0"},
		{"relative logFile", withCmd("ADD"), `{"cniVersion":"1.0.0","name":"n","logFile":"rel.log"}`, 7, `"logFile": "rel.log" is not an absolute path`, "1.0.0"},
		{"bad prevResult", withCmd("ADD"), `{"cniVersion":"1.0.0","name":"n","prevResult":{"ips":"x"}}`, 6, `"prevResult"`, "1.0.0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var ran []string
			var out, errb bytes.Buffer
			code := Run(recorder(&ran), tc.env, strings.NewReader(tc.stdin), &out, &errb)
			if code == 0 {
				t.Fatalf("exit 0, want failure; stdout %s", out.String())
			}
			var got errorOutput
			if err := json.Unmarshal(out.Bytes(), &got); err != nil {
				t.Fatalf("stdout is not an error object: %v: %q", err, out.String())
			}
			if got.Code != tc.code || !strings.Contains(got.Msg, tc.msgHas) || got.CNIVersion != tc.version {
				t.Fatalf("got %+v, want code %d, cniVersion %s, msg containing %q", got, tc.code, tc.version, tc.msgHas)
			}
			// Errors found before the verb runs must stop it from running.
			if tc.code == 4 || tc.code == 1 || (tc.code == 6 && tc.msgHas == "decode network config") || tc.msgHas == `"name"` {
				if len(ran) > 0 {
					t.Fatalf("verb ran despite bad input: %v", ran)
				}
			}
		})
	}
}

// TestRunWithoutCNIPath: CNI_PATH is optional for ADD, CHECK and DEL
// (spec 1.1.0, "Parameters"; the reference's skel requires it); the
// in-process host-local never needs it. And a DEL passes an ifname with
// "%" that ADD refuses: there is nothing of it to remove.
func TestRunWithoutCNIPath(t *testing.T) {
	for _, cmd := range []string{"ADD", "CHECK", "DEL"} {
		var ran []string
		var out bytes.Buffer
		e := env("CNI_COMMAND", cmd, "CNI_CONTAINERID", "c1", "CNI_NETNS", "/var/run/netns/x", "CNI_IFNAME", "eth0")
		if code := Run(recorder(&ran), e, strings.NewReader(`{"cniVersion":"1.0.0","name":"n"}`), &out, &out); code != 0 {
			t.Fatalf("%s without CNI_PATH failed: %s", cmd, out.String())
		}
		if diff := cmp.Diff([]string{cmd}, ran); diff != "" {
			t.Fatal(diff)
		}
	}
	var ran []string
	var out bytes.Buffer
	if code := Run(recorder(&ran), withCmd("DEL", "CNI_IFNAME", "eth%d", "CNI_ARGS", "garbage"), strings.NewReader(`{"cniVersion":"1.0.0","name":"n"}`), &out, &out); code != 0 || len(ran) != 1 {
		t.Fatalf("DEL of an ifname with '%%' (whose ADD was refused): %s", out.String())
	}
}

func TestRunDelWithoutNetns(t *testing.T) {
	var ran []string
	var out bytes.Buffer
	e := env("CNI_COMMAND", "DEL", "CNI_CONTAINERID", "c1", "CNI_IFNAME", "eth0", "CNI_PATH", "/p")
	if code := Run(recorder(&ran), e, strings.NewReader(`{"cniVersion":"1.0.0","name":"n"}`), &out, &out); code != 0 {
		t.Fatalf("DEL without CNI_NETNS failed: %s", out.String())
	}
	if diff := cmp.Diff([]string{"DEL"}, ran); diff != "" {
		t.Fatal(diff)
	}
	if out.Len() != 0 {
		t.Fatalf("DEL printed %q", out.String())
	}
}

func TestRunVersionEchoesCNIVersion(t *testing.T) {
	for _, in := range []string{"0.3.1", "0.4.0", "1.0.0", "1.1.0"} {
		var out bytes.Buffer
		code := Run(Plugin{}, env("CNI_COMMAND", "VERSION"), strings.NewReader(`{"cniVersion":"`+in+`"}`), &out, &out)
		if code != 0 {
			t.Fatalf("VERSION failed: %s", out.String())
		}
		var got struct {
			CNIVersion        string   `json:"cniVersion"`
			SupportedVersions []string `json:"supportedVersions"`
		}
		if err := json.Unmarshal(out.Bytes(), &got); err != nil {
			t.Fatal(err)
		}
		want := []string{"0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"}
		if got.CNIVersion != in || !cmp.Equal(got.SupportedVersions, want) {
			t.Fatalf("VERSION(%s) = %+v", in, got)
		}
	}
	var out bytes.Buffer
	if Run(Plugin{}, env("CNI_COMMAND", "VERSION"), strings.NewReader(""), &out, &out) != 0 || !strings.Contains(out.String(), `"1.1.0"`) {
		t.Fatalf("VERSION with empty stdin: %s", out.String())
	}
}

func TestRunAddPrintsResultInRequestedVersion(t *testing.T) {
	for _, v := range SupportedVersions {
		t.Run(v, func(t *testing.T) {
			var ran []string
			var out, errb bytes.Buffer
			stdin := `{"cniVersion":"` + v + `","name":"n"}`
			if code := Run(recorder(&ran), withCmd("ADD"), strings.NewReader(stdin), &out, &errb); code != 0 {
				t.Fatalf("ADD failed: %s %s", out.String(), errb.String())
			}
			var got map[string]any
			if err := json.Unmarshal(out.Bytes(), &got); err != nil {
				t.Fatal(err)
			}
			if got["cniVersion"] != v {
				t.Fatalf("result cniVersion %v, want %s: %s", got["cniVersion"], v, out.String())
			}
			if strings.HasPrefix(v, "0.1") || strings.HasPrefix(v, "0.2") {
				if _, ok := got["ip4"]; !ok {
					t.Fatalf("0.x result without ip4: %s", out.String())
				}
			} else if _, ok := got["ips"]; !ok {
				t.Fatalf("result without ips: %s", out.String())
			}
		})
	}
}

func TestLoadParsesPrevResult(t *testing.T) {
	stdin := `{"cniVersion":"0.4.0","name":"n","prevResult":{"cniVersion":"0.4.0","interfaces":[{"name":"eth0"}],"ips":[{"version":"4","interface":0,"address":"10.1.0.5/24"}]}}`
	conf, err := Load[testConf](&skel.CmdArgs{StdinData: []byte(stdin)})
	if err != nil {
		t.Fatal(err)
	}
	if conf.MTU != 1500 {
		t.Fatalf("default not applied: mtu %d", conf.MTU)
	}
	if conf.PrevResult == nil || len(conf.PrevResult.IPs) != 1 || conf.PrevResult.IPs[0].Address.String() != "10.1.0.5/24" {
		t.Fatalf("prevResult not parsed: %+v", conf.PrevResult)
	}
}

func TestStepsUndo(t *testing.T) {
	var order []string
	run := func(s *steps, name Step, fail bool) {
		err := s.run(name, func() (func() error, error) {
			return func() error {
				order = append(order, string(name))
				if fail {
					return errors.New(string(name) + " failed")
				}
				return nil
			}, nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	all := []Step{"a", "b", "c", "x"}
	s := steps{declared: all}
	run(&s, "a", false)
	run(&s, "b", true)
	run(&s, "c", false)
	// A step with nothing of its own to undo keeps no undo; one that failed
	// part-way keeps the undo of what it made.
	if err := s.run("x", func() (func() error, error) { return nil, nil }); err != nil {
		t.Fatal(err)
	}
	if err := s.run("x", func() (func() error, error) {
		return func() error { order = append(order, "failed x"); return nil }, errors.New("no")
	}); err == nil {
		t.Fatal("a failing step succeeded")
	}
	err := s.Undo()
	if diff := cmp.Diff([]string{"failed x", "c", "b", "a"}, order); diff != "" {
		t.Fatalf("undo order (-want +got): %s", diff)
	}
	if err == nil || !strings.Contains(err.Error(), "b failed") {
		t.Fatalf("Undo error = %v, want b's failure", err)
	}
	if err := s.Undo(); err != nil || len(order) != 4 {
		t.Fatal("second Undo ran steps again")
	}
	order = nil
	kept := steps{declared: all}
	run(&kept, "a", false)
	kept.commit()
	if err := kept.Undo(); err != nil || len(order) != 0 {
		t.Fatalf("Undo after commit ran %v", order)
	}
}

// TestLogsKeepContext: records written after the config is loaded, to the
// config's logFile, carry plugin, command, container and network.
func TestLogsKeepContext(t *testing.T) {
	file := filepath.Join(t.TempDir(), "plugin.log")
	p := Plugin{Name: "test", Del: func(a *skel.CmdArgs) error {
		if _, err := Load[testConf](a); err != nil {
			return err
		}
		slog.Info("released", "step", "x")
		return nil
	}}
	stdin := `{"cniVersion":"1.1.0","name":"net1","logFile":"` + file + `","logLevel":"info"}`
	var out bytes.Buffer
	if code := Run(p, withCmd("DEL"), strings.NewReader(stdin), &out, &out); code != 0 {
		t.Fatalf("DEL failed: %s", out.String())
	}
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"msg=released", "plugin=test", "cmd=DEL", "container=c1", "network=net1", "step=x"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("log %q lacks %s", b, want)
		}
	}
}

// TestLoadLenient: DEL and GC load what identifies the attachment from a
// config that Load refuses; only JSON that does not decode fails.
func TestLoadLenient(t *testing.T) {
	for _, stdin := range []string{
		`{"cniVersion":"1.1.0","name":"n","mtu":9}`,
		`{"cniVersion":"1.1.0","name":"n","mtu":"big"}`,
		`{"cniVersion":"1.1.0","name":"n","logLevel":"loud","prevResult":{"ips":"x"}}`,
	} {
		args := &skel.CmdArgs{StdinData: []byte(stdin)}
		if _, err := Load[testConf](args); err == nil {
			t.Fatalf("Load accepted %s", stdin)
		}
		conf, err := LoadLenient[testConf](args)
		if err != nil || conf.Name != "n" {
			t.Fatalf("LoadLenient(%s) = %+v, %v", stdin, conf, err)
		}
	}
	if _, err := LoadLenient[testConf](&skel.CmdArgs{StdinData: []byte(`{"name":`)}); CNIError(err).Code != types.ErrDecodingFailure {
		t.Fatalf("broken JSON: %v, want code 6", err)
	}
}

func TestValidateInfo(t *testing.T) {
	if err := ValidateInfo(Info{Name: "p", About: "a", VethPrefix: "vp", Steps: []Step{"x"}}); err != nil {
		t.Fatal(err)
	}
	err := ValidateInfo(Info{Name: "p", About: "a", VethPrefix: "zz", Steps: []Step{StepVeth}})
	if err == nil || !strings.Contains(err.Error(), `"zz"`) || !strings.Contains(err.Error(), `"veth" named twice`) {
		t.Fatalf("bad info: %v", err)
	}
}

// TestRunByHand: without CNI_COMMAND a plugin says what it is and which
// versions it speaks, on stderr, and exits 0, as the reference does.
func TestRunByHand(t *testing.T) {
	var out, errb bytes.Buffer
	var ran []string
	if code := Run(recorder(&ran), env(fullEnv...), strings.NewReader(""), &out, &errb); code != 0 {
		t.Fatalf("exit %d", code)
	}
	if out.Len() != 0 || !strings.Contains(errb.String(), "test dev: test plugin") || !strings.Contains(errb.String(), "1.1.0") || len(ran) > 0 {
		t.Fatalf("stdout %q stderr %q ran %v", out.String(), errb.String(), ran)
	}
}

// TestVerbLogLine: each verb writes one line with what it acted on, the
// outcome and the time: info when it succeeds, warn (shown by default)
// with the code when it fails; the runtime's trace context rides along.
func TestVerbLogLine(t *testing.T) {
	file := filepath.Join(t.TempDir(), "plugin.log")
	p := Plugin{Name: "test", Del: func(a *skel.CmdArgs) error {
		if _, err := Load[testConf](a); err != nil {
			return err
		}
		Note("hostLink", "vp123", "addresses", []string{"10.1.0.5/24"})
		return nil
	}, Check: func(a *skel.CmdArgs) error {
		if _, err := Load[testConf](a); err != nil {
			return err
		}
		return ConfigError(`"x": wrong`)
	}}
	for _, tc := range []struct{ cmd, level string }{{"DEL", "info"}, {"CHECK", "warn"}} {
		stdin := `{"cniVersion":"1.1.0","name":"net1","logFile":"` + file + `","logLevel":"` + tc.level + `"}`
		var out bytes.Buffer
		Run(p, withCmd(tc.cmd, "TRACEPARENT", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"), strings.NewReader(stdin), &out, &out)
	}
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != 2 {
		t.Fatalf("want one line per verb, got %q", lines)
	}
	for i, want := range [][]string{
		{"level=INFO", `msg="DEL ok"`, "plugin=test", "cmd=DEL", "container=c1", "ifname=eth0", "netns=/var/run/netns/x", "network=net1",
			"hostLink=vp123", "addresses=[10.1.0.5/24]", "took=", "traceparent=00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
		{"level=WARN", `msg="CHECK failed"`, "code=7", `error="\"x\": wrong"`, "took="},
	} {
		for _, w := range want {
			if !strings.Contains(lines[i], w) {
				t.Errorf("line %q lacks %s", lines[i], w)
			}
		}
	}
}

// TestInvalidConfigLogged: a config that does not validate — the
// commonest failure — is logged like any other: to its logFile, with its
// network (it used to go to stderr, which the runtime drops).
func TestInvalidConfigLogged(t *testing.T) {
	file := filepath.Join(t.TempDir(), "plugin.log")
	var ran []string
	stdin := `{"cniVersion":"1.1.0","name":"net9","mtu":20,"logFile":"` + file + `"}`
	var out, errb bytes.Buffer
	if code := Run(recorder(&ran), withCmd("ADD"), strings.NewReader(stdin), &out, &errb); code == 0 {
		t.Fatal("ADD of an invalid config succeeded")
	}
	var got errorOutput
	if err := json.Unmarshal(out.Bytes(), &got); err != nil || got.Code != types.ErrInvalidNetworkConfig {
		t.Fatalf("stdout %s, want code 7", out.String())
	}
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("no log file: %v (stderr %q)", err, errb.String())
	}
	for _, want := range []string{"level=WARN", `msg="ADD failed"`, "code=7", "network=net9", `\"mtu\": must be 68-65535`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("log %q lacks %s", b, want)
		}
	}
}

// TestEarlyFailuresLogged: failures found before the verb runs — the
// environment, the JSON, the version — get their warn line too: to the
// config's logFile when it names one, else stderr (they used to get none).
func TestEarlyFailuresLogged(t *testing.T) {
	for _, tc := range []struct {
		name, cmd, stdin string
		env              []string
		toFile           bool
		want             []string
	}{
		{"CNI_ARGS without =", "ADD", `{"cniVersion":"1.1.0","name":"net9","logFile":"%s"}`, []string{"CNI_ARGS", "foo"}, true,
			[]string{`msg="ADD failed"`, "code=4", "network=net9", "container=c1", "CNI_ARGS"}},
		{"an unsupported version", "DEL", `{"cniVersion":"9.9.9","name":"net9","logFile":"%s"}`, nil, true,
			[]string{`msg="DEL failed"`, "code=1", "network=net9", "9.9.9"}},
		{"STATUS before 1.1.0", "STATUS", `{"cniVersion":"1.0.0","name":"net9","logFile":"%s"}`, nil, true,
			[]string{`msg="STATUS failed"`, "code=1", "network=net9"}},
		{"JSON that does not decode", "ADD", `{"cniVersion":"1.1.0","name":`, nil, false,
			[]string{"level=WARN", `msg="ADD failed"`, "code=6", "container=c1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "plugin.log")
			stdin := strings.Replace(tc.stdin, "%s", file, 1)
			var ran []string
			var out, errb bytes.Buffer
			if code := Run(recorder(&ran), withCmd(tc.cmd, tc.env...), strings.NewReader(stdin), &out, &errb); code == 0 || len(ran) > 0 {
				t.Fatalf("exit %d, ran %v", code, ran)
			}
			log := errb.String()
			if tc.toFile {
				b, err := os.ReadFile(file)
				if err != nil {
					t.Fatalf("no log file: %v (stderr %q)", err, log)
				}
				log = string(b)
			}
			for _, want := range tc.want {
				if !strings.Contains(log, want) {
					t.Errorf("log %q lacks %s", log, want)
				}
			}
		})
	}
}

func TestLogRotation(t *testing.T) {
	file := filepath.Join(t.TempDir(), "plugin.log")
	if err := os.WriteFile(file, bytes.Repeat([]byte("x"), LogFileMax+1), 0o600); err != nil {
		t.Fatal(err)
	}
	rotate(file)
	if st, err := os.Stat(file + ".1"); err != nil || st.Size() != LogFileMax+1 {
		t.Fatalf("not rotated: %v", err)
	}
	if _, err := os.Stat(file); err == nil {
		t.Fatal("the log file stayed")
	}
	if err := os.WriteFile(file, []byte("small"), 0o600); err != nil {
		t.Fatal(err)
	}
	rotate(file)
	if _, err := os.Stat(file); err != nil {
		t.Fatal("a small log was rotated")
	}
}

func TestUnknownKeys(t *testing.T) {
	got := UnknownKeys([]byte(`{"cniVersion":"1.1.0","name":"n","type":"t","ipMask":true,"MTU":1400,"kubernetes":{},"ipam":{},"runtimeConfig":{}}`), JSONKeys(&VethConf{}))
	want := []string{`"MTU": unknown key; did you mean "mtu"?`, `"ipMask": unknown key; did you mean "ipMasq"?`, `"kubernetes": unknown key`}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("(-want +got): %s", diff)
	}
	// libcni's GC sends both names of the valid attachments.
	if got := UnknownKeys([]byte(`{"cniVersion":"1.1.0","name":"n","type":"t","ipMasq":true,"mac":"x","prevResult":{},"cni.dev/valid-attachments":[],"cni.dev/attachments":[]}`), JSONKeys(&VethConf{})); len(got) != 1 || !strings.Contains(got[0], `"mac"`) {
		t.Fatalf("known keys named: %v", got)
	}
	// The in-process host-local's keys, and its ranges'; another IPAM
	// plugin's keys are its own.
	got = UnknownKeys([]byte(`{"name":"n","type":"t","ipam":{"type":"host-local","datadir":"/x","routes":[],"ranges":[[{"subnet":"10.1.0.0/24","rangeStrat":"10.1.0.9"}]]}}`), JSONKeys(&VethConf{}))
	want = []string{`"ipam.datadir": unknown key; did you mean "ipam.dataDir"?`, `"ipam.ranges[0][0].rangeStrat": unknown key; did you mean "ipam.ranges[0][0].rangeStart"?`}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("host-local keys (-want +got): %s", diff)
	}
	if got := UnknownKeys([]byte(`{"name":"n","type":"t","ipam":{"type":"whereabouts","range":"10.2.0.0/24"}}`), JSONKeys(&VethConf{})); len(got) != 0 {
		t.Fatalf("another IPAM plugin's keys named: %v", got)
	}
}
