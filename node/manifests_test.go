// Package node is the Kubernetes side of netns-cni, a module of its own so
// that client-go never reaches the plugins' dependencies: the node agent
// (agent/, cmd/netns-cni-node/) and its tests. This test decodes the
// DaemonSet install (deploy/kubernetes) into real Kubernetes objects and
// checks what it grants.
package node

import (
	"os"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/runtime"
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
	for _, o := range decode(t) {
		switch v := o.(type) {
		case *corev1.Namespace:
			kinds = append(kinds, "Namespace")
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
		default:
			t.Fatalf("unexpected object %T", o)
		}
	}
	want := []string{"Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "ConfigMap", "DaemonSet"}
	if !slices.Equal(kinds, want) {
		t.Fatalf("objects %v, want %v", kinds, want)
	}
}
