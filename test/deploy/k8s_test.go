package deploy

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// k8s object shapes, only the fields the checks read.
type (
	k8sMeta struct {
		Name   string            `yaml:"name"`
		Labels map[string]string `yaml:"labels"`
	}
	k8sProbe struct {
		HTTPGet *struct {
			Path string `yaml:"path"`
			Port any    `yaml:"port"`
		} `yaml:"httpGet"`
	}
	k8sEnv struct {
		Name      string `yaml:"name"`
		Value     string `yaml:"value"`
		ValueFrom *struct {
			SecretKeyRef *struct{ Name, Key string } `yaml:"secretKeyRef"`
		} `yaml:"valueFrom"`
	}
	k8sContainer struct {
		Name    string   `yaml:"name"`
		Image   string   `yaml:"image"`
		Command []string `yaml:"command"`
		Args    []string `yaml:"args"`
		Ports   []struct {
			Name          string `yaml:"name"`
			ContainerPort int    `yaml:"containerPort"`
		} `yaml:"ports"`
		Env            []k8sEnv  `yaml:"env"`
		ReadinessProbe *k8sProbe `yaml:"readinessProbe"`
		LivenessProbe  *k8sProbe `yaml:"livenessProbe"`
		VolumeMounts   []struct {
			Name      string `yaml:"name"`
			MountPath string `yaml:"mountPath"`
		} `yaml:"volumeMounts"`
		Lifecycle *struct {
			PreStop *struct {
				Sleep *struct {
					Seconds int `yaml:"seconds"`
				} `yaml:"sleep"`
			} `yaml:"preStop"`
		} `yaml:"lifecycle"`
		SecurityContext *struct {
			AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
		} `yaml:"securityContext"`
	}
	k8sPod struct {
		Metadata k8sMeta `yaml:"metadata"`
		Spec     struct {
			RestartPolicy                 string `yaml:"restartPolicy"`
			TerminationGracePeriodSeconds *int   `yaml:"terminationGracePeriodSeconds"`
			SecurityContext               *struct {
				RunAsNonRoot *bool `yaml:"runAsNonRoot"`
				RunAsUser    *int  `yaml:"runAsUser"`
			} `yaml:"securityContext"`
			Containers []k8sContainer `yaml:"containers"`
			Volumes    []struct {
				Name      string `yaml:"name"`
				ConfigMap *struct {
					Name string `yaml:"name"`
				} `yaml:"configMap"`
			} `yaml:"volumes"`
		} `yaml:"spec"`
	}
	k8sObject struct {
		file       string
		APIVersion string  `yaml:"apiVersion"`
		Kind       string  `yaml:"kind"`
		Metadata   k8sMeta `yaml:"metadata"`
		Spec       struct {
			Replicas *int `yaml:"replicas"`
			Selector struct {
				MatchLabels map[string]string `yaml:"matchLabels"`
			} `yaml:"selector"`
			Template     k8sPod `yaml:"template"`
			MinAvailable any    `yaml:"minAvailable"`
			Ports        []struct {
				Name       string `yaml:"name"`
				Port       int    `yaml:"port"`
				TargetPort any    `yaml:"targetPort"`
			} `yaml:"ports"`
		} `yaml:"spec"`
		raw map[string]any
	}
)

// k8sObjects decodes every document of every manifest in deploy/k8s.
func k8sObjects(t *testing.T) []k8sObject {
	t.Helper()
	files, err := filepath.Glob(repoPath(t, "deploy", "k8s", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests in deploy/k8s: %v", err)
	}
	var out []k8sObject
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(b))
		for {
			var node yaml.Node
			if err := dec.Decode(&node); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			var o k8sObject
			if err := node.Decode(&o); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			if err := node.Decode(&o.raw); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			o.file = filepath.Base(f)
			if o.APIVersion == "" || o.Kind == "" {
				t.Errorf("%s: a document without apiVersion/kind", o.file)
			}
			out = append(out, o)
		}
	}
	return out
}

func subset(sel, labels map[string]string) bool {
	if len(sel) == 0 {
		return false
	}
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// portNumber resolves a probe or targetPort (number or container port name).
func portNumber(t *testing.T, c k8sContainer, p any) int {
	t.Helper()
	switch v := p.(type) {
	case int:
		return v
	case string:
		for _, cp := range c.Ports {
			if cp.Name == v {
				return cp.ContainerPort
			}
		}
		t.Errorf("port name %q is not a container port of %s", v, c.Name)
	}
	return 0
}

func TestKubernetesManifests(t *testing.T) {
	objs := k8sObjects(t)
	byKind := map[string][]k8sObject{}
	for _, o := range objs {
		byKind[o.Kind] = append(byKind[o.Kind], o)
	}

	// kustomization: every manifest but the example Secret is a resource,
	// the ConfigMap comes from the shared config file.
	if len(byKind["Kustomization"]) != 1 {
		t.Fatalf("want one kustomization.yaml, have %d", len(byKind["Kustomization"]))
	}
	kz := byKind["Kustomization"][0].raw
	var resources []string
	for _, r := range kz["resources"].([]any) {
		resources = append(resources, r.(string))
	}
	for _, o := range objs {
		if o.Kind != "Kustomization" && o.file != "secret.example.yaml" && !slices.Contains(resources, o.file) {
			t.Errorf("%s (%s) is not in kustomization.yaml resources", o.file, o.Kind)
		}
	}
	for _, r := range resources {
		if _, err := os.Stat(repoPath(t, "deploy", "k8s", r)); err != nil {
			t.Errorf("kustomization resource %s: %v", r, err)
		}
	}
	gen := kz["configMapGenerator"].([]any)[0].(map[string]any)
	cmName := gen["name"].(string)
	if files := gen["files"].([]any); len(files) != 1 || files[0] != "pgproxy.yaml=config/pgproxy.yaml" {
		t.Errorf("configMapGenerator files %v, want pgproxy.yaml=config/pgproxy.yaml", files)
	}

	// Deployment.
	if len(byKind["Deployment"]) != 1 {
		t.Fatalf("want one Deployment, have %d", len(byKind["Deployment"]))
	}
	dep := byKind["Deployment"][0]
	if dep.Spec.Replicas == nil || *dep.Spec.Replicas < 2 {
		t.Fatalf("Deployment replicas: want 2 or more (%v)", func() any {
			if dep.Spec.Replicas == nil {
				return "unset"
			}
			return *dep.Spec.Replicas
		}())
	}
	pod := dep.Spec.Template
	if !subset(dep.Spec.Selector.MatchLabels, pod.Metadata.Labels) {
		t.Errorf("Deployment selector %v does not select its pods %v", dep.Spec.Selector.MatchLabels, pod.Metadata.Labels)
	}
	sc := pod.Spec.SecurityContext
	if sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.RunAsUser == nil || *sc.RunAsUser == 0 {
		t.Error("pgproxy pods must run as a non-root user (runAsNonRoot, runAsUser != 0)")
	}
	if len(pod.Spec.Containers) != 1 {
		t.Fatalf("want one container, have %d", len(pod.Spec.Containers))
	}
	c := pod.Spec.Containers[0]

	// The config the pods run: the ConfigMap file with the container's env
	// (secrets replaced by a placeholder).
	var env []string
	for _, e := range c.Env {
		v := e.Value
		if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
			v = "secret-placeholder"
		}
		env = append(env, e.Name+"="+v)
	}
	cfg := containerConfig(t, env)
	if len(cfg.Backends) < 2 {
		t.Errorf("backends %v: want the primary and replicas from PGPROXY_BACKENDS", cfg.Backends)
	}
	ci := slices.Index(c.Args, "--config")
	if ci < 0 || ci+1 >= len(c.Args) {
		t.Fatalf("container args %v have no --config", c.Args)
	}
	mountedAt := ""
	for _, vm := range c.VolumeMounts {
		for _, v := range pod.Spec.Volumes {
			if v.Name == vm.Name && v.ConfigMap != nil && v.ConfigMap.Name == cmName {
				mountedAt = vm.MountPath
			}
		}
	}
	if mountedAt == "" || c.Args[ci+1] != mountedAt+"/pgproxy.yaml" {
		t.Errorf("--config %s, ConfigMap %s mounted at %q", c.Args[ci+1], cmName, mountedAt)
	}

	// Ports: one container port per listener and the HTTP port.
	httpPort, _ := strconv.Atoi(portOf(t, cfg.HTTP.Addr))
	var ports []int
	for _, p := range c.Ports {
		ports = append(ports, p.ContainerPort)
	}
	var listenerPorts []int
	for _, l := range cfg.Listen {
		n, _ := strconv.Atoi(portOf(t, l.Addr))
		listenerPorts = append(listenerPorts, n)
		if !slices.Contains(ports, n) {
			t.Errorf("listener %s has no container port", l.Addr)
		}
	}
	if !slices.Contains(ports, httpPort) {
		t.Errorf("http.addr %s has no container port", cfg.HTTP.Addr)
	}

	// Probes on the HTTP endpoints.
	for name, pr := range map[string]struct {
		probe *k8sProbe
		path  string
	}{"readiness": {c.ReadinessProbe, "/readyz"}, "liveness": {c.LivenessProbe, "/livez"}} {
		if pr.probe == nil || pr.probe.HTTPGet == nil {
			t.Errorf("%s probe missing or not httpGet", name)
			continue
		}
		if pr.probe.HTTPGet.Path != pr.path || portNumber(t, c, pr.probe.HTTPGet.Port) != httpPort {
			t.Errorf("%s probe %s on port %v, want %s on %d", name, pr.probe.HTTPGet.Path, pr.probe.HTTPGet.Port, pr.path, httpPort)
		}
	}

	// Drain: the grace period covers preStop plus limits.drain_timeout.
	preStop := 0
	if c.Lifecycle != nil && c.Lifecycle.PreStop != nil && c.Lifecycle.PreStop.Sleep != nil {
		preStop = c.Lifecycle.PreStop.Sleep.Seconds
	}
	if g := pod.Spec.TerminationGracePeriodSeconds; g == nil ||
		time.Duration(*g)*time.Second <= cfg.Limits.DrainTimeout+time.Duration(preStop)*time.Second {
		t.Errorf("terminationGracePeriodSeconds %v must exceed preStop %ds + drain_timeout %s", g, preStop, cfg.Limits.DrainTimeout)
	}

	// One Service per listener, selecting the pods.
	covered := map[int]string{}
	for _, s := range byKind["Service"] {
		sel, _ := s.raw["spec"].(map[string]any)["selector"].(map[string]any)
		labels := map[string]string{}
		for k, v := range sel {
			labels[k] = v.(string)
		}
		if !subset(labels, pod.Metadata.Labels) {
			t.Errorf("Service %s selector %v does not select the pgproxy pods", s.Metadata.Name, labels)
		}
		for _, p := range s.Spec.Ports {
			n := portNumber(t, c, p.TargetPort)
			if slices.Contains(listenerPorts, n) {
				if prev, dup := covered[n]; dup {
					t.Errorf("listener port %d in Services %s and %s", n, prev, s.Metadata.Name)
				}
				covered[n] = s.Metadata.Name
			}
		}
	}
	for _, n := range listenerPorts {
		if covered[n] == "" {
			t.Errorf("listener port %d has no Service", n)
		}
	}

	// PodDisruptionBudget.
	if len(byKind["PodDisruptionBudget"]) != 1 {
		t.Fatalf("want one PodDisruptionBudget, have %d", len(byKind["PodDisruptionBudget"]))
	}
	pdb := byKind["PodDisruptionBudget"][0]
	if !subset(pdb.Spec.Selector.MatchLabels, pod.Metadata.Labels) {
		t.Errorf("PDB selector %v does not select the pgproxy pods", pdb.Spec.Selector.MatchLabels)
	}
	if ma, ok := pdb.Spec.MinAvailable.(int); !ok || ma < 1 || ma >= *dep.Spec.Replicas {
		t.Errorf("PDB minAvailable %v: want at least 1 and fewer than the %d replicas (else drains block)", pdb.Spec.MinAvailable, *dep.Spec.Replicas)
	}

	// Job for metabase-provision.
	var job *k8sObject
	for i, j := range byKind["Job"] {
		if strings.Contains(j.Metadata.Name, "metabase-provision") {
			job = &byKind["Job"][i]
		}
	}
	if job == nil {
		t.Fatal("no metabase-provision Job")
	}
	jp := job.Spec.Template.Spec
	if jp.RestartPolicy != "OnFailure" && jp.RestartPolicy != "Never" {
		t.Errorf("Job restartPolicy %q", jp.RestartPolicy)
	}
	if len(jp.Containers) != 1 || !strings.HasSuffix(strings.Join(jp.Containers[0].Command, " "), "metabase-provision") {
		t.Errorf("Job does not run metabase-provision: %+v", jp.Containers)
	}
	if jp.SecurityContext == nil || jp.SecurityContext.RunAsNonRoot == nil || !*jp.SecurityContext.RunAsNonRoot {
		t.Error("Job pods must run as non-root")
	}
	if jp.Containers[0].Image != c.Image {
		t.Errorf("Job image %q, want pgproxy's image %q", jp.Containers[0].Image, c.Image)
	}
	var mbHost string
	for _, e := range jp.Containers[0].Env {
		if e.Name == "MB_DB_HOST" {
			mbHost = e.Value
		}
		if e.Value != "" && (strings.HasSuffix(e.Name, "_PASS") || strings.HasSuffix(e.Name, "PASSWORD")) {
			t.Errorf("Job env %s has a literal secret; use a secretKeyRef", e.Name)
		}
	}
	readSvc := covered[listenerPorts[1]]
	if !strings.HasPrefix(mbHost, readSvc+".") && mbHost != readSvc {
		t.Errorf("Metabase reads through %q, want the read listener's Service %s", mbHost, readSvc)
	}
	for _, e := range c.Env {
		if e.Value != "" && strings.HasSuffix(e.Name, "PASSWORD") {
			t.Errorf("Deployment env %s has a literal secret; use a secretKeyRef", e.Name)
		}
	}
}
