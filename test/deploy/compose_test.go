package deploy

import (
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/ofitec/pgproxy/configs"
)

// containerConfig loads deploy/k8s/config/pgproxy.yaml (the file both the
// compose stack and the k8s ConfigMap use) as pgproxy would, with env (nil:
// a minimal environment naming one backend).
func containerConfig(t testing.TB, env []string) *configs.Config {
	t.Helper()
	if env == nil {
		env = []string{"PGPROXY_BACKENDS=db:5432"}
	}
	cfg, err := configs.Load(configs.LoadOptions{Path: repoPath(t, "deploy", "k8s", "config", "pgproxy.yaml"), Environ: env})
	if err != nil {
		t.Fatalf("deploy/k8s/config/pgproxy.yaml with env %q: %v", env, err)
	}
	return cfg
}

func portOf(t testing.TB, addr string) string {
	t.Helper()
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("%q: %v", addr, err)
	}
	return port
}

func TestContainerConfig(t *testing.T) {
	cfg := containerConfig(t, nil)
	if len(cfg.Listen) != 2 || cfg.Listen[0].Route != configs.RouteRules || cfg.Listen[1].Route != configs.RouteRead {
		t.Errorf("listeners %+v, want a rules listener and a read listener", cfg.Listen)
	}
	for _, l := range append(slices.Clone(cfg.Listen), configs.Listener{Addr: cfg.HTTP.Addr}) {
		if host, _, _ := net.SplitHostPort(l.Addr); host != "0.0.0.0" && host != "" {
			t.Errorf("%s listens on %s only: unreachable from outside the container", l.Addr, host)
		}
	}
	if cfg.Health.Password != "" {
		t.Error("a password is in the config file; it must come from PGPROXY_HEALTH_PASSWORD")
	}
}

// composeFile is the part of `docker-compose config` output the tests read.
type composeFile struct {
	Services map[string]struct {
		Image       string            `yaml:"image"`
		Build       map[string]any    `yaml:"build"`
		Entrypoint  []string          `yaml:"entrypoint"`
		Command     []string          `yaml:"command"`
		Environment map[string]string `yaml:"environment"`
		Volumes     []string          `yaml:"volumes"`
		Ports       []struct {
			Published int `yaml:"published"`
			Target    int `yaml:"target"`
		} `yaml:"ports"`
		DependsOn map[string]struct {
			Condition string `yaml:"condition"`
		} `yaml:"depends_on"`
		Healthcheck *struct {
			Test []string `yaml:"test"`
		} `yaml:"healthcheck"`
		Restart         string `yaml:"restart"`
		StopGracePeriod string `yaml:"stop_grace_period"`
	} `yaml:"services"`
}

// TestComposeConfig validates deploy/docker-compose.yml with docker-compose
// itself (it parses and interpolates without an engine) and checks what the
// stack needs: the services, the one-shot provisioning job, the files it
// mounts, and that pgproxy's config loads with the stack's environment.
func TestComposeConfig(t *testing.T) {
	dc := tool(t, "docker-compose")
	dir := repoPath(t, "deploy")
	out, err := run(t, dir, nil, dc, "--project-directory", dir, "-f", "docker-compose.yml", "config")
	if err != nil {
		t.Fatalf("docker-compose config: %v\n%s", err, out)
	}
	var c composeFile
	if err := yaml.Unmarshal(out, &c); err != nil {
		t.Fatalf("docker-compose config output: %v\n%s", err, out)
	}
	var names []string
	for n := range c.Services {
		names = append(names, n)
	}
	for _, want := range []string{"primary", "replica", "pgproxy", "marquez", "metabase", "metabase-provision", "prometheus", "grafana"} {
		if !slices.Contains(names, want) {
			t.Errorf("service %s missing (have %v)", want, names)
		}
	}

	// Bind mounts point at files of the repository.
	for name, s := range c.Services {
		for _, v := range s.Volumes {
			src, _, _ := strings.Cut(v, ":")
			if !filepath.IsAbs(src) {
				continue // named volume
			}
			if _, err := os.Stat(src); err != nil {
				t.Errorf("service %s mounts %s: %v", name, src, err)
			}
		}
	}

	// pgproxy: built from the repository's Dockerfile, its config file is
	// the shared one, and it loads with the service's environment.
	p := c.Services["pgproxy"]
	if p.Build == nil || filepath.Clean(p.Build["context"].(string)) != root(t) {
		t.Errorf("pgproxy build %v, want the repository root", p.Build)
	}
	mounted := false
	for _, v := range p.Volumes {
		mounted = mounted || strings.HasPrefix(v, repoPath(t, "deploy", "k8s", "config", "pgproxy.yaml")+":/etc/pgproxy/pgproxy.yaml")
	}
	if !mounted || !slices.Equal(p.Command, []string{"serve", "--config", "/etc/pgproxy/pgproxy.yaml"}) {
		t.Errorf("pgproxy does not run the shared config: volumes %v command %v", p.Volumes, p.Command)
	}
	var env []string
	for k, v := range p.Environment {
		env = append(env, k+"="+v)
	}
	cfg := containerConfig(t, env)
	var backends []string
	for _, b := range cfg.Backends {
		backends = append(backends, b.Addr)
	}
	if !slices.Equal(backends, []string{"primary:5432", "replica:5432"}) {
		t.Errorf("pgproxy backends %v, want the primary and replica services", backends)
	}
	if !cfg.Lineage.Enabled || cfg.Lineage.Transport.URL != "http://marquez:5000" {
		t.Errorf("lineage %+v, want enabled towards the marquez service", cfg.Lineage)
	}
	published := map[string]bool{}
	for _, port := range p.Ports {
		published[strconv.Itoa(port.Target)] = true
	}
	for _, addr := range []string{cfg.Listen[0].Addr, cfg.Listen[1].Addr, cfg.HTTP.Addr} {
		if !published[portOf(t, addr)] {
			t.Errorf("pgproxy port %s (%s) not published", portOf(t, addr), addr)
		}
	}
	if p.Healthcheck == nil || !strings.Contains(strings.Join(p.Healthcheck.Test, " "), "/readyz") ||
		!strings.Contains(strings.Join(p.Healthcheck.Test, " "), "/"+portOf(t, cfg.HTTP.Addr)) {
		t.Errorf("pgproxy healthcheck %v, want /readyz on the http port", p.Healthcheck)
	}
	if p.StopGracePeriod == "" {
		t.Error("pgproxy has no stop_grace_period: docker's 10s default cuts the drain short")
	}

	// metabase-provision: a one-shot job with the image's binary, pointed
	// at pgproxy's read listener.
	mp := c.Services["metabase-provision"]
	if mp.Restart != "no" || len(mp.Entrypoint) == 0 || !strings.HasSuffix(mp.Entrypoint[0], "metabase-provision") {
		t.Errorf("metabase-provision restart %q entrypoint %v: want a one-shot run of metabase-provision", mp.Restart, mp.Entrypoint)
	}
	if mp.Image != p.Image {
		t.Errorf("metabase-provision image %q, want pgproxy's %q", mp.Image, p.Image)
	}
	if mp.Environment["MB_DB_HOST"] != "pgproxy" || mp.Environment["MB_DB_PORT"] != portOf(t, cfg.Listen[1].Addr) {
		t.Errorf("Metabase reads through %s:%s, want pgproxy's read listener", mp.Environment["MB_DB_HOST"], mp.Environment["MB_DB_PORT"])
	}
	if mp.DependsOn["pgproxy"].Condition != "service_healthy" {
		t.Errorf("metabase-provision depends_on %v, want pgproxy healthy", mp.DependsOn)
	}

	// Prometheus loads the rules; Grafana gets the dashboard.
	prom := strings.Join(c.Services["prometheus"].Volumes, " ")
	if !strings.Contains(prom, repoPath(t, "deploy", "prometheus")+":/etc/prometheus") {
		t.Errorf("prometheus volumes %s, want deploy/prometheus at /etc/prometheus", prom)
	}
	graf := strings.Join(c.Services["grafana"].Volumes, " ")
	if !strings.Contains(graf, repoPath(t, "deploy", "grafana", "pgproxy.json")) || !strings.Contains(graf, "/etc/grafana/provisioning") {
		t.Errorf("grafana volumes %s, want the dashboard and the provisioning", graf)
	}

	// The replica clones the primary.
	if !strings.Contains(strings.Join(c.Services["replica"].Entrypoint, " "), "pg_basebackup -h primary") {
		t.Error("replica does not pg_basebackup from the primary")
	}
}
