package deploy

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/utils/ptr"
)

// inCI reports whether the test runs in CI, where a missing tool is a
// failure instead of a skip.
func inCI() bool {
	return os.Getenv("CI") == "true"
}

// requireTool returns the path of a tool from the repository's .bin folder,
// from PATH or from /usr/sbin, where Debian installs nginx and which a
// non-root PATH often lacks. A missing tool skips the test, or fails it in
// CI.
func requireTool(t *testing.T, name, installHint string) string {
	t.Helper()

	local, err := filepath.Abs(filepath.Join("..", ".bin", name))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(local); err == nil {
		return local
	}
	if path, err := exec.LookPath(name); err == nil {
		return path
	}
	if path, err := exec.LookPath(filepath.Join("/usr/sbin", name)); err == nil {
		return path
	}

	if inCI() {
		t.Fatalf("%s not found in ../.bin, PATH or /usr/sbin, and CI=true; install it with: %s", name, installHint)
	}
	t.Skipf("%s not found in ../.bin, PATH or /usr/sbin; install it with: %s", name, installHint)
	return ""
}

// kustomizeDirs are the folders that the overlays build from.
var kustomizeDirs = []string{"base", "overlays", "nginx"}

// prodPlaceholderSecrets are the files that operators create in
// overlays/prod/secrets; tests use placeholders and never read real ones.
var prodPlaceholderSecrets = map[string]string{
	"auth-kek":          "cGxhY2Vob2xkZXItcGxhY2Vob2xkZXItcGxhY2Vob2w=\n",
	"auth-database-url": "postgres://auth:placeholder@auth-db.example.com:5432/auth?sslmode=verify-full\n",
	"todo-database-url": "postgres://todo:placeholder@todo-db.example.com:5432/todo?sslmode=verify-full\n",
}

// renderOverlay runs kustomize build on a copy of kustomizeDirs in a
// temporary folder, with placeholder files for the prod secrets.
func renderOverlay(t *testing.T, overlay string) []byte {
	t.Helper()
	kustomize := requireTool(t, "kustomize", "GOBIN=$PWD/.bin go install sigs.k8s.io/kustomize/kustomize/v5@v5.8.1")

	dir := t.TempDir()
	for _, sub := range kustomizeDirs {
		if err := os.CopyFS(filepath.Join(dir, sub), os.DirFS(sub)); err != nil {
			t.Fatalf("copy %s: %v", sub, err)
		}
	}
	secretsDir := filepath.Join(dir, "overlays", "prod", "secrets")
	if err := os.RemoveAll(secretsDir); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(secretsDir, 0o700); err != nil {
		t.Fatal(err)
	}
	for name, content := range prodPlaceholderSecrets {
		if err := os.WriteFile(filepath.Join(secretsDir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}

	cmd := exec.Command(kustomize, "build", filepath.Join(dir, "overlays", overlay))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("kustomize build overlays/%s: %v\n%s", overlay, err, stderr.String())
	}
	return out
}

func renderAndDecode(t *testing.T, overlay string) []renderedObject {
	t.Helper()
	objects, err := decodeObjects(renderOverlay(t, overlay))
	if err != nil {
		t.Fatalf("decode overlays/%s: %v", overlay, err)
	}
	if len(objects) == 0 {
		t.Fatalf("overlays/%s rendered no objects", overlay)
	}
	return objects
}

func findObject[T any](t *testing.T, objects []renderedObject, kind, name string) T {
	t.Helper()
	for _, o := range objects {
		if o.Kind == kind && o.Name == name {
			v, ok := o.Value.(T)
			if !ok {
				t.Fatalf("%s/%s has type %T", kind, name, o.Value)
			}
			return v
		}
	}
	t.Fatalf("%s/%s not found in the render", kind, name)
	var zero T
	return zero
}

// overlayRules are the rules that differ per overlay.
var overlayRules = []struct {
	overlay         string
	minReplicas     int32
	externalSecrets []string
}{
	{overlay: "dev", minReplicas: 1},
	{overlay: "prod", minReplicas: 2, externalSecrets: []string{"todoapp-gateway-tls"}},
}

func TestOverlaysFollowRules(t *testing.T) {
	for _, tc := range overlayRules {
		t.Run(tc.overlay, func(t *testing.T) {
			objects := renderAndDecode(t, tc.overlay)

			templates := podTemplates(objects)
			if len(templates) == 0 {
				t.Fatal("no Deployment or StatefulSet in the render")
			}
			for _, pod := range templates {
				for _, problem := range checkPodSpec(pod.Owner, pod.Spec) {
					t.Error(problem)
				}
			}
			for _, problem := range checkReferences(objects, tc.externalSecrets) {
				t.Error(problem)
			}
			for _, problem := range checkMinReplicas(objects, tc.minReplicas) {
				t.Error(problem)
			}
		})
	}
}

func TestServicesUseGRPCProbes(t *testing.T) {
	services := []struct {
		name     string
		grpcPort int32
	}{
		{"auth-service", 50051},
		{"todo-service", 50052},
	}
	for _, overlay := range []string{"dev", "prod"} {
		objects := renderAndDecode(t, overlay)
		for _, svc := range services {
			t.Run(overlay+"/"+svc.name, func(t *testing.T) {
				deployment := findObject[*appsv1.Deployment](t, objects, "Deployment", svc.name)
				containers := deployment.Spec.Template.Spec.Containers
				if len(containers) != 1 {
					t.Fatalf("%d containers, want 1", len(containers))
				}
				c := containers[0]

				live := c.LivenessProbe
				if live == nil || live.GRPC == nil {
					t.Fatalf("liveness probe = %+v, want a gRPC probe", live)
				}
				if live.GRPC.Port != svc.grpcPort || ptr.Deref(live.GRPC.Service, "") != "" {
					t.Errorf("liveness gRPC probe = port %d service %q, want port %d service \"\"", live.GRPC.Port, ptr.Deref(live.GRPC.Service, ""), svc.grpcPort)
				}

				ready := c.ReadinessProbe
				if ready == nil || ready.GRPC == nil {
					t.Fatalf("readiness probe = %+v, want a gRPC probe", ready)
				}
				if ready.GRPC.Port != svc.grpcPort || ptr.Deref(ready.GRPC.Service, "") != "readiness" {
					t.Errorf("readiness gRPC probe = port %d service %q, want port %d service \"readiness\"", ready.GRPC.Port, ptr.Deref(ready.GRPC.Service, ""), svc.grpcPort)
				}

				service := findObject[*corev1.Service](t, objects, "Service", svc.name)
				var grpcPort *corev1.ServicePort
				for i := range service.Spec.Ports {
					if service.Spec.Ports[i].Name == "grpc" {
						grpcPort = &service.Spec.Ports[i]
					}
				}
				if grpcPort == nil {
					t.Fatal("Service has no port named grpc")
				}
				if grpcPort.Port != svc.grpcPort || ptr.Deref(grpcPort.AppProtocol, "") != "kubernetes.io/h2c" {
					t.Errorf("Service grpc port = %d appProtocol %q, want %d kubernetes.io/h2c", grpcPort.Port, ptr.Deref(grpcPort.AppProtocol, ""), svc.grpcPort)
				}
			})
		}
	}
}

func TestNetworkPolicyDefaultDeny(t *testing.T) {
	for _, overlay := range []string{"dev", "prod"} {
		t.Run(overlay, func(t *testing.T) {
			objects := renderAndDecode(t, overlay)
			policy := findObject[*networkingv1.NetworkPolicy](t, objects, "NetworkPolicy", "default-deny-all")

			if len(policy.Spec.PodSelector.MatchLabels) != 0 || len(policy.Spec.PodSelector.MatchExpressions) != 0 {
				t.Errorf("podSelector = %+v, want {} (every pod)", policy.Spec.PodSelector)
			}
			types := policy.Spec.PolicyTypes
			if !slices.Contains(types, networkingv1.PolicyTypeIngress) || !slices.Contains(types, networkingv1.PolicyTypeEgress) {
				t.Errorf("policyTypes = %v, want Ingress and Egress", types)
			}
			if len(policy.Spec.Ingress) != 0 || len(policy.Spec.Egress) != 0 {
				t.Errorf("default-deny-all has %d ingress and %d egress rules, want none", len(policy.Spec.Ingress), len(policy.Spec.Egress))
			}
		})
	}
}

func TestProdBuildNeedsSecretFiles(t *testing.T) {
	kustomize := requireTool(t, "kustomize", "GOBIN=$PWD/.bin go install sigs.k8s.io/kustomize/kustomize/v5@v5.8.1")

	// A copy without the secret files stands for a checkout where no
	// operator has created them yet.
	dir := t.TempDir()
	for _, sub := range kustomizeDirs {
		if err := os.CopyFS(filepath.Join(dir, sub), os.DirFS(sub)); err != nil {
			t.Fatalf("copy %s: %v", sub, err)
		}
	}
	for name := range prodPlaceholderSecrets {
		if err := os.RemoveAll(filepath.Join(dir, "overlays", "prod", "secrets", name)); err != nil {
			t.Fatal(err)
		}
	}

	out, err := exec.Command(kustomize, "build", filepath.Join(dir, "overlays", "prod")).CombinedOutput()
	if err == nil {
		t.Fatal("kustomize build overlays/prod succeeded without secret files, want an error")
	}
	if !strings.Contains(string(out), "auth-kek") {
		t.Errorf("kustomize build output = %q, want it to name the missing file auth-kek", out)
	}
}

func TestDecodeObjectsRejectsUnknownField(t *testing.T) {
	stream := []byte(`apiVersion: apps/v1
kind: Deployment
metadata:
  name: example
spec:
  replicas: 1
  replicaCount: 2
`)
	if _, err := decodeObjects(stream); err == nil {
		t.Error("decodeObjects(Deployment with spec.replicaCount) = nil error, want an unknown field error")
	}
}

func TestDecodeObjectsRejectsUnknownKind(t *testing.T) {
	stream := []byte("apiVersion: v1\nkind: Pod\nmetadata:\n  name: example\n")
	if _, err := decodeObjects(stream); err == nil {
		t.Error("decodeObjects(Pod) = nil error, want an unsupported kind error")
	}
}

// compliantPodSpec returns a pod spec that passes checkPodSpec, for the
// negative cases to break one rule at a time.
func compliantPodSpec() *corev1.PodSpec {
	return &corev1.PodSpec{
		SecurityContext: &corev1.PodSecurityContext{
			RunAsNonRoot:   ptr.To(true),
			RunAsUser:      ptr.To[int64](65532),
			SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		},
		Containers: []corev1.Container{{
			Name:  "app",
			Image: "registry.example.com/app:v1.0.0",
			LivenessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{
				GRPC: &corev1.GRPCAction{Port: 50051},
			}},
			ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{
				GRPC: &corev1.GRPCAction{Port: 50051, Service: ptr.To("readiness")},
			}},
			Resources: corev1.ResourceRequirements{
				Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("64Mi")},
				Limits:   corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1"), corev1.ResourceMemory: resource.MustParse("128Mi")},
			},
			SecurityContext: &corev1.SecurityContext{
				ReadOnlyRootFilesystem:   ptr.To(true),
				AllowPrivilegeEscalation: ptr.To(false),
				Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
			},
		}},
	}
}

func TestCheckPodSpecReportsViolations(t *testing.T) {
	if problems := checkPodSpec("Deployment/good", compliantPodSpec()); len(problems) != 0 {
		t.Fatalf("checkPodSpec(compliant spec) = %q, want no problems", problems)
	}

	tests := []struct {
		name   string
		mutate func(spec *corev1.PodSpec)
		want   string
	}{
		{"no liveness probe", func(s *corev1.PodSpec) { s.Containers[0].LivenessProbe = nil }, "missing liveness probe"},
		{"no readiness probe", func(s *corev1.PodSpec) { s.Containers[0].ReadinessProbe = nil }, "missing readiness probe"},
		{"no memory limit", func(s *corev1.PodSpec) { delete(s.Containers[0].Resources.Limits, corev1.ResourceMemory) }, "missing memory limit"},
		{"no cpu request", func(s *corev1.PodSpec) { delete(s.Containers[0].Resources.Requests, corev1.ResourceCPU) }, "missing cpu request"},
		{"latest tag", func(s *corev1.PodSpec) { s.Containers[0].Image = "registry.example.com/app:latest" }, "uses the tag latest"},
		{"untagged image", func(s *corev1.PodSpec) { s.Containers[0].Image = "registry.example.com:5000/app" }, "has no tag or digest"},
		{"root user", func(s *corev1.PodSpec) { s.SecurityContext.RunAsUser = ptr.To[int64](0) }, "runAsUser is 0"},
		{"no user", func(s *corev1.PodSpec) { s.SecurityContext.RunAsUser = nil }, "runAsUser is not set"},
		{"runAsNonRoot false", func(s *corev1.PodSpec) { s.Containers[0].SecurityContext.RunAsNonRoot = ptr.To(false) }, "runAsNonRoot is not true"},
		{"writable root", func(s *corev1.PodSpec) { s.Containers[0].SecurityContext.ReadOnlyRootFilesystem = nil }, "readOnlyRootFilesystem is not true"},
		{"privilege escalation", func(s *corev1.PodSpec) { s.Containers[0].SecurityContext.AllowPrivilegeEscalation = ptr.To(true) }, "allowPrivilegeEscalation is not false"},
		{"capabilities kept", func(s *corev1.PodSpec) { s.Containers[0].SecurityContext.Capabilities = nil }, "capabilities do not drop ALL"},
		{"capability added", func(s *corev1.PodSpec) {
			s.Containers[0].SecurityContext.Capabilities.Add = []corev1.Capability{"NET_ADMIN"}
		}, "capabilities add"},
		{"unconfined seccomp", func(s *corev1.PodSpec) {
			s.Containers[0].SecurityContext.SeccompProfile = &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeUnconfined}
		}, "seccompProfile type is not RuntimeDefault"},
		{"untagged init container", func(s *corev1.PodSpec) {
			s.InitContainers = []corev1.Container{{Name: "init", Image: "busybox"}}
		}, `container "init": image "busybox" has no tag or digest`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			spec := compliantPodSpec()
			tc.mutate(spec)

			problems := checkPodSpec("Deployment/bad", spec)
			if !slices.ContainsFunc(problems, func(p string) bool { return strings.Contains(p, tc.want) }) {
				t.Errorf("checkPodSpec = %q, want a problem containing %q", problems, tc.want)
			}
		})
	}
}

func TestCheckReferencesReportsMissing(t *testing.T) {
	spec := compliantPodSpec()
	spec.ServiceAccountName = "missing-account"
	spec.Volumes = []corev1.Volume{{
		Name:         "secrets",
		VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "missing-secret"}},
	}}
	spec.Containers[0].EnvFrom = []corev1.EnvFromSource{{
		ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "missing-config"}},
	}}
	spec.Containers[0].Env = []corev1.EnvVar{{
		Name: "PASSWORD",
		ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
			LocalObjectReference: corev1.LocalObjectReference{Name: "present-secret"},
			Key:                  "missing-key",
		}},
	}}
	deployment := &appsv1.Deployment{}
	deployment.Name = "bad"
	deployment.Spec.Template.Spec = *spec
	secret := &corev1.Secret{Data: map[string][]byte{"password": []byte("x")}}
	secret.Name = "present-secret"

	objects := []renderedObject{
		{Kind: "Deployment", Name: "bad", Value: deployment},
		{Kind: "Secret", Name: "present-secret", Value: secret},
	}
	problems := checkReferences(objects, nil)

	for _, want := range []string{
		`ServiceAccount "missing-account"`,
		`Secret "missing-secret"`,
		`ConfigMap "missing-config"`,
		`key "missing-key" of Secret "present-secret"`,
	} {
		if !slices.ContainsFunc(problems, func(p string) bool { return strings.Contains(p, want) }) {
			t.Errorf("checkReferences = %q, want a problem containing %q", problems, want)
		}
	}
}

func TestCheckMinReplicasReportsOneReplica(t *testing.T) {
	deployment := &appsv1.Deployment{}
	deployment.Name = "single"
	deployment.Spec.Replicas = ptr.To[int32](1)

	problems := checkMinReplicas([]renderedObject{{Kind: "Deployment", Name: "single", Value: deployment}}, 2)
	if len(problems) != 1 {
		t.Errorf("checkMinReplicas(1 replica, min 2) = %q, want one problem", problems)
	}
}
