// Package node is the Kubernetes side of netns-cni, a module of its own so
// that client-go never reaches the plugins' dependencies: the node agent
// (agent/, cmd/netns-cni-node/) and its tests. This test decodes the
// DaemonSet install (deploy/kubernetes) into real Kubernetes objects and
// checks what it grants.
package node

import (
	"maps"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes/scheme"

	"github.com/netns-cni/netns-cni/node/agent"
)

func decode(t *testing.T) []runtime.Object {
	t.Helper()
	b, err := os.ReadFile("../deploy/kubernetes/netns-cni.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var objs []runtime.Object
	for _, doc := range strings.Split(string(b), "\n---\n") {
		if strings.TrimSpace(strings.TrimPrefix(doc, "---")) == "" {
			continue
		}
		obj, _, err := scheme.Codecs.UniversalDeserializer().Decode([]byte(doc), nil, nil)
		if err != nil {
			t.Fatalf("decode:\n%s\n%v", doc, err)
		}
		objs = append(objs, obj)
	}
	return objs
}

func TestManifests(t *testing.T) {
	var kinds []string
	var image string
	for _, o := range decode(t) {
		switch v := o.(type) {
		case *corev1.Namespace:
			kinds = append(kinds, "Namespace")
			// Host network, NET_ADMIN, host paths: the baseline and
			// restricted Pod Security levels refuse the agent's pods.
			if v.Labels["pod-security.kubernetes.io/enforce"] != "privileged" {
				t.Fatalf("namespace labels %v: want pod-security.kubernetes.io/enforce: privileged", v.Labels)
			}
		case *corev1.ServiceAccount:
			kinds = append(kinds, "ServiceAccount")
		case *rbacv1.ClusterRole:
			kinds = append(kinds, "ClusterRole")
			// Least privilege: read nodes, nothing else.
			if len(v.Rules) != 1 || !slices.Equal(v.Rules[0].Resources, []string{"nodes"}) ||
				!slices.Equal(v.Rules[0].Verbs, []string{"get", "list", "watch"}) || !slices.Equal(v.Rules[0].APIGroups, []string{""}) {
				t.Fatalf("ClusterRole rules %+v", v.Rules)
			}
		case *rbacv1.ClusterRoleBinding:
			kinds = append(kinds, "ClusterRoleBinding")
			if v.RoleRef.Name != "netns-cni-node" || len(v.Subjects) != 1 || v.Subjects[0].Name != "netns-cni-node" {
				t.Fatalf("binding %+v", v)
			}
		case *corev1.ConfigMap:
			kinds = append(kinds, "ConfigMap")
			// As strictly as the agent reads it.
			if _, err := agent.LoadConfig(strings.NewReader(v.Data["config.json"])); err != nil {
				t.Fatalf("shipped config: %v", err)
			}
		case *appsv1.DaemonSet:
			kinds = append(kinds, "DaemonSet")
			spec := v.Spec.Template.Spec
			if !spec.HostNetwork || spec.PriorityClassName != "system-node-critical" || spec.ServiceAccountName != "netns-cni-node" {
				t.Fatalf("pod spec %+v", spec)
			}
			if !maps.Equal(spec.NodeSelector, map[string]string{"kubernetes.io/os": "linux"}) {
				t.Fatalf("nodeSelector %v: want kubernetes.io/os: linux only", spec.NodeSelector)
			}
			if len(spec.Tolerations) != 1 || spec.Tolerations[0].Operator != corev1.TolerationOpExists || spec.Tolerations[0].Key != "" {
				t.Fatalf("must tolerate every taint: %+v", spec.Tolerations)
			}
			paths := map[string]bool{}
			for _, vol := range spec.Volumes {
				if vol.HostPath != nil {
					paths[vol.HostPath.Path] = true
				}
			}
			if !paths["/opt/cni/bin"] || !paths["/etc/cni/net.d"] {
				t.Fatalf("host paths %v", paths)
			}
			c := spec.Containers[0]
			if c.Env[0].Name != "NODE_NAME" || c.Env[0].ValueFrom.FieldRef.FieldPath != "spec.nodeName" {
				t.Fatalf("container %+v", c)
			}
			// Liveness and readiness apart: a node waiting for its podCIDR
			// must not have its agent restarted.
			if c.LivenessProbe == nil || c.LivenessProbe.HTTPGet == nil || c.LivenessProbe.HTTPGet.Path != "/livez" {
				t.Fatalf("livenessProbe %+v, want GET /livez", c.LivenessProbe)
			}
			if c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet == nil || c.ReadinessProbe.HTTPGet.Path != "/readyz" {
				t.Fatalf("readinessProbe %+v, want GET /readyz", c.ReadinessProbe)
			}
			if c.LivenessProbe.HTTPGet.Port.IntValue() != 9099 || c.ReadinessProbe.HTTPGet.Port.IntValue() != 9099 {
				t.Fatalf("probe ports %v %v, want the agent's 9099", c.LivenessProbe.HTTPGet.Port, c.ReadinessProbe.HTTPGet.Port)
			}
			image = c.Image
		default:
			t.Fatalf("unexpected object %T", o)
		}
	}
	want := []string{"Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "ConfigMap", "DaemonSet"}
	if !slices.Equal(kinds, want) {
		t.Fatalf("objects %v, want %v", kinds, want)
	}
	checkImageTag(t, image)
}

// checkImageTag: the DaemonSet's image, kustomization.yaml's images entry
// and the Makefile's IMAGE (what `make image` builds) name one image and
// one version tag.
func checkImageTag(t *testing.T, image string) {
	t.Helper()
	i := strings.LastIndex(image, ":")
	if i < 0 || strings.Contains(image[i:], "/") {
		t.Fatalf("DaemonSet image %q has no tag", image)
	}
	name, tag := image[:i], image[i+1:]
	if !regexp.MustCompile(`^v\d+\.\d+\.\d+$`).MatchString(tag) {
		t.Fatalf("DaemonSet image %q: the tag must be a version (vX.Y.Z)", image)
	}
	b, err := os.ReadFile("../deploy/kubernetes/kustomization.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var k struct {
		Kind      string   `json:"kind"`
		Resources []string `json:"resources"`
		Images    []struct {
			Name    string `json:"name"`
			NewName string `json:"newName"`
			NewTag  string `json:"newTag"`
		} `json:"images"`
	}
	if err := yaml.Unmarshal(b, &k); err != nil {
		t.Fatal(err)
	}
	if k.Kind != "Kustomization" || !slices.Equal(k.Resources, []string{"netns-cni.yaml"}) {
		t.Fatalf("kustomization %+v", k)
	}
	if len(k.Images) != 1 || k.Images[0].Name != name || k.Images[0].NewName != "" {
		t.Fatalf("kustomization images %+v, want one entry for %s", k.Images, name)
	}
	if k.Images[0].NewTag != tag {
		t.Fatalf("DaemonSet image tag %q, kustomization.yaml newTag %q: set both to the release", tag, k.Images[0].NewTag)
	}
	mk, err := os.ReadFile("../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^IMAGE\s*\?=\s*(\S+)\s*$`).FindSubmatch(mk)
	if m == nil {
		t.Fatal("Makefile: no IMAGE ?= line")
	}
	if string(m[1]) != image {
		t.Fatalf("Makefile IMAGE ?= %s, want %s: make image must build the tag the manifest names", m[1], image)
	}
}
