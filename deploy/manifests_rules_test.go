package deploy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	"sigs.k8s.io/yaml"
)

// renderedObject is one decoded object of a kustomize build.
type renderedObject struct {
	Kind string
	Name string
	// Value is a pointer to the typed object, for example *appsv1.Deployment.
	Value any
}

func (o renderedObject) String() string {
	return o.Kind + "/" + o.Name
}

// newTypedObject returns an empty typed object for each apiVersion and kind
// that our manifests may contain. Any other kind is a decoding error, so a
// new kind needs an entry here and a schema for kubeconform.
func newTypedObject(apiVersion, kind string) (any, error) {
	switch apiVersion + " " + kind {
	case "v1 Namespace":
		return &corev1.Namespace{}, nil
	case "v1 ServiceAccount":
		return &corev1.ServiceAccount{}, nil
	case "v1 Service":
		return &corev1.Service{}, nil
	case "v1 ConfigMap":
		return &corev1.ConfigMap{}, nil
	case "v1 Secret":
		return &corev1.Secret{}, nil
	case "v1 PersistentVolumeClaim":
		return &corev1.PersistentVolumeClaim{}, nil
	case "apps/v1 Deployment":
		return &appsv1.Deployment{}, nil
	case "apps/v1 StatefulSet":
		return &appsv1.StatefulSet{}, nil
	case "policy/v1 PodDisruptionBudget":
		return &policyv1.PodDisruptionBudget{}, nil
	case "autoscaling/v2 HorizontalPodAutoscaler":
		return &autoscalingv2.HorizontalPodAutoscaler{}, nil
	case "networking.k8s.io/v1 NetworkPolicy":
		return &networkingv1.NetworkPolicy{}, nil
	case "gateway.networking.k8s.io/v1 Gateway":
		return &gatewayv1.Gateway{}, nil
	case "gateway.networking.k8s.io/v1 GRPCRoute":
		return &gatewayv1.GRPCRoute{}, nil
	case "gateway.networking.k8s.io/v1 HTTPRoute":
		return &gatewayv1.HTTPRoute{}, nil
	}
	return nil, fmt.Errorf("unsupported apiVersion %q kind %q: add it to newTypedObject", apiVersion, kind)
}

// decodeObjects splits a multi-document YAML stream and decodes each
// document strictly into its k8s.io/api or Gateway API type. An unknown or
// duplicate field is an error.
func decodeObjects(stream []byte) ([]renderedObject, error) {
	reader := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(stream)))
	var objects []renderedObject
	for {
		doc, err := reader.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("read YAML document %d: %w", len(objects)+1, err)
		}
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}

		var typeMeta metav1.TypeMeta
		if err := yaml.Unmarshal(doc, &typeMeta); err != nil {
			return nil, fmt.Errorf("read apiVersion and kind of document %d: %w", len(objects)+1, err)
		}
		value, err := newTypedObject(typeMeta.APIVersion, typeMeta.Kind)
		if err != nil {
			return nil, err
		}
		if err := yaml.UnmarshalStrict(doc, value); err != nil {
			return nil, fmt.Errorf("decode %s document %d strictly: %w", typeMeta.Kind, len(objects)+1, err)
		}

		meta, ok := value.(metav1.Object)
		if !ok {
			return nil, fmt.Errorf("%s has no object metadata", typeMeta.Kind)
		}
		objects = append(objects, renderedObject{Kind: typeMeta.Kind, Name: meta.GetName(), Value: value})
	}
	return objects, nil
}

// podTemplate is a workload's pod spec with the workload's name.
type podTemplate struct {
	Owner string
	Spec  *corev1.PodSpec
}

func podTemplates(objects []renderedObject) []podTemplate {
	var templates []podTemplate
	for _, o := range objects {
		switch v := o.Value.(type) {
		case *appsv1.Deployment:
			templates = append(templates, podTemplate{o.String(), &v.Spec.Template.Spec})
		case *appsv1.StatefulSet:
			templates = append(templates, podTemplate{o.String(), &v.Spec.Template.Spec})
		}
	}
	return templates
}

// checkPodSpec returns every violation of our container rules in one pod
// spec: probes, resource requests and limits, the restricted Pod Security
// profile and a pinned image tag.
func checkPodSpec(owner string, spec *corev1.PodSpec) []string {
	var problems []string
	report := func(container, format string, args ...any) {
		problems = append(problems, fmt.Sprintf("%s container %q: ", owner, container)+fmt.Sprintf(format, args...))
	}

	for _, c := range spec.Containers {
		if c.LivenessProbe == nil {
			report(c.Name, "missing liveness probe")
		}
		if c.ReadinessProbe == nil {
			report(c.Name, "missing readiness probe")
		}
	}

	all := append(append([]corev1.Container{}, spec.InitContainers...), spec.Containers...)
	for _, c := range all {
		for _, resource := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
			if _, ok := c.Resources.Requests[resource]; !ok {
				report(c.Name, "missing %s request", resource)
			}
			if _, ok := c.Resources.Limits[resource]; !ok {
				report(c.Name, "missing %s limit", resource)
			}
		}

		if err := checkImageReference(c.Image); err != nil {
			report(c.Name, "%v", err)
		}

		for _, problem := range checkRestrictedSecurity(spec.SecurityContext, c.SecurityContext) {
			report(c.Name, "%s", problem)
		}
	}
	return problems
}

// checkRestrictedSecurity checks the effective security settings of one
// container against the "restricted" Pod Security profile, plus a numeric
// non-root user and a read-only root filesystem. Container settings
// override the pod's for runAsNonRoot, runAsUser and seccompProfile, as
// the kubelet applies them.
func checkRestrictedSecurity(pod *corev1.PodSecurityContext, container *corev1.SecurityContext) []string {
	if pod == nil {
		pod = &corev1.PodSecurityContext{}
	}
	if container == nil {
		container = &corev1.SecurityContext{}
	}

	runAsNonRoot := pod.RunAsNonRoot
	if container.RunAsNonRoot != nil {
		runAsNonRoot = container.RunAsNonRoot
	}
	runAsUser := pod.RunAsUser
	if container.RunAsUser != nil {
		runAsUser = container.RunAsUser
	}
	seccomp := pod.SeccompProfile
	if container.SeccompProfile != nil {
		seccomp = container.SeccompProfile
	}

	var problems []string
	if runAsNonRoot == nil || !*runAsNonRoot {
		problems = append(problems, "runAsNonRoot is not true")
	}
	if runAsUser == nil {
		problems = append(problems, "runAsUser is not set to a numeric user")
	} else if *runAsUser == 0 {
		problems = append(problems, "runAsUser is 0 (root)")
	}
	if seccomp == nil || seccomp.Type != corev1.SeccompProfileTypeRuntimeDefault {
		problems = append(problems, "seccompProfile type is not RuntimeDefault")
	}
	if container.ReadOnlyRootFilesystem == nil || !*container.ReadOnlyRootFilesystem {
		problems = append(problems, "readOnlyRootFilesystem is not true")
	}
	if container.AllowPrivilegeEscalation == nil || *container.AllowPrivilegeEscalation {
		problems = append(problems, "allowPrivilegeEscalation is not false")
	}
	if container.Privileged != nil && *container.Privileged {
		problems = append(problems, "privileged is true")
	}
	if container.Capabilities == nil || !dropsAllCapabilities(container.Capabilities.Drop) {
		problems = append(problems, "capabilities do not drop ALL")
	}
	if container.Capabilities != nil && len(container.Capabilities.Add) > 0 {
		problems = append(problems, fmt.Sprintf("capabilities add %v", container.Capabilities.Add))
	}
	return problems
}

func dropsAllCapabilities(drop []corev1.Capability) bool {
	for _, c := range drop {
		if c == "ALL" {
			return true
		}
	}
	return false
}

// checkImageReference rejects an image without a tag or digest and one
// tagged latest, because both change under a running Deployment.
func checkImageReference(image string) error {
	if image == "" {
		return errors.New("image is empty")
	}

	name, digest, hasDigest := strings.Cut(image, "@")
	tag := ""
	if i := strings.LastIndex(name, ":"); i > strings.LastIndex(name, "/") {
		tag = name[i+1:]
	}

	if tag == "latest" {
		return fmt.Errorf("image %q uses the tag latest", image)
	}
	if tag == "" && !hasDigest {
		return fmt.Errorf("image %q has no tag or digest", image)
	}
	if hasDigest && !strings.HasPrefix(digest, "sha256:") {
		return fmt.Errorf("image %q has a digest that is not sha256", image)
	}
	return nil
}

// checkReferences returns every ConfigMap, Secret, ServiceAccount and
// Service that the rendered objects refer to but that is not in the same
// render. Secret keys picked by secretKeyRef or volume items must exist in
// the Secret. externalSecrets lists Secrets that are created outside the
// build (for example a TLS certificate from cert-manager); references to
// them are allowed.
func checkReferences(objects []renderedObject, externalSecrets []string) []string {
	configMaps := map[string]map[string]bool{}
	secrets := map[string]map[string]bool{}
	serviceAccounts := map[string]bool{}
	services := map[string]*corev1.Service{}
	for _, o := range objects {
		switch v := o.Value.(type) {
		case *corev1.ConfigMap:
			keys := map[string]bool{}
			for k := range v.Data {
				keys[k] = true
			}
			for k := range v.BinaryData {
				keys[k] = true
			}
			configMaps[v.Name] = keys
		case *corev1.Secret:
			keys := map[string]bool{}
			for k := range v.Data {
				keys[k] = true
			}
			for k := range v.StringData {
				keys[k] = true
			}
			secrets[v.Name] = keys
		case *corev1.ServiceAccount:
			serviceAccounts[v.Name] = true
		case *corev1.Service:
			services[v.Name] = v
		}
	}
	for _, name := range externalSecrets {
		if _, ok := secrets[name]; !ok {
			secrets[name] = nil // nil: keys unknown, so any key is accepted
		}
	}

	var problems []string
	checkKey := func(owner, kind string, index map[string]map[string]bool, name, key string, optional *bool) {
		if optional != nil && *optional {
			return
		}
		keys, ok := index[name]
		if !ok {
			problems = append(problems, fmt.Sprintf("%s refers to %s %q, which is not in the render", owner, kind, name))
			return
		}
		if key != "" && keys != nil && !keys[key] {
			problems = append(problems, fmt.Sprintf("%s refers to key %q of %s %q, which has no such key", owner, key, kind, name))
		}
	}

	for _, pod := range podTemplates(objects) {
		spec := pod.Spec
		if spec.ServiceAccountName != "" && !serviceAccounts[spec.ServiceAccountName] {
			problems = append(problems, fmt.Sprintf("%s refers to ServiceAccount %q, which is not in the render", pod.Owner, spec.ServiceAccountName))
		}
		for _, s := range spec.ImagePullSecrets {
			checkKey(pod.Owner, "Secret", secrets, s.Name, "", nil)
		}

		for _, v := range spec.Volumes {
			if v.Secret != nil {
				for _, item := range v.Secret.Items {
					checkKey(pod.Owner, "Secret", secrets, v.Secret.SecretName, item.Key, v.Secret.Optional)
				}
				checkKey(pod.Owner, "Secret", secrets, v.Secret.SecretName, "", v.Secret.Optional)
			}
			if v.ConfigMap != nil {
				for _, item := range v.ConfigMap.Items {
					checkKey(pod.Owner, "ConfigMap", configMaps, v.ConfigMap.Name, item.Key, v.ConfigMap.Optional)
				}
				checkKey(pod.Owner, "ConfigMap", configMaps, v.ConfigMap.Name, "", v.ConfigMap.Optional)
			}
			if v.Projected != nil {
				for _, source := range v.Projected.Sources {
					if source.Secret != nil {
						checkKey(pod.Owner, "Secret", secrets, source.Secret.Name, "", source.Secret.Optional)
					}
					if source.ConfigMap != nil {
						checkKey(pod.Owner, "ConfigMap", configMaps, source.ConfigMap.Name, "", source.ConfigMap.Optional)
					}
				}
			}
		}

		for _, c := range append(append([]corev1.Container{}, spec.InitContainers...), spec.Containers...) {
			owner := fmt.Sprintf("%s container %q", pod.Owner, c.Name)
			for _, from := range c.EnvFrom {
				if from.SecretRef != nil {
					checkKey(owner, "Secret", secrets, from.SecretRef.Name, "", from.SecretRef.Optional)
				}
				if from.ConfigMapRef != nil {
					checkKey(owner, "ConfigMap", configMaps, from.ConfigMapRef.Name, "", from.ConfigMapRef.Optional)
				}
			}
			for _, env := range c.Env {
				if env.ValueFrom == nil {
					continue
				}
				if ref := env.ValueFrom.SecretKeyRef; ref != nil {
					checkKey(owner, "Secret", secrets, ref.Name, ref.Key, ref.Optional)
				}
				if ref := env.ValueFrom.ConfigMapKeyRef; ref != nil {
					checkKey(owner, "ConfigMap", configMaps, ref.Name, ref.Key, ref.Optional)
				}
			}
		}
	}

	for _, o := range objects {
		switch v := o.Value.(type) {
		case *gatewayv1.Gateway:
			for _, listener := range v.Spec.Listeners {
				if listener.TLS == nil {
					continue
				}
				for _, ref := range listener.TLS.CertificateRefs {
					if ref.Kind == nil || *ref.Kind == "Secret" {
						checkKey(o.String(), "Secret", secrets, string(ref.Name), "", nil)
					}
				}
			}
		case *gatewayv1.GRPCRoute:
			for _, rule := range v.Spec.Rules {
				for _, backend := range rule.BackendRefs {
					problems = append(problems, checkServiceBackend(o.String(), services, backend.BackendObjectReference)...)
				}
			}
		}
	}
	return problems
}

// checkServiceBackend checks that a route's backend is a Service in the
// render, that it has the port, and that the port declares h2c so the
// gateway speaks HTTP/2 to it.
func checkServiceBackend(owner string, services map[string]*corev1.Service, ref gatewayv1.BackendObjectReference) []string {
	if ref.Kind != nil && *ref.Kind != "Service" {
		return nil
	}
	service, ok := services[string(ref.Name)]
	if !ok {
		return []string{fmt.Sprintf("%s routes to Service %q, which is not in the render", owner, ref.Name)}
	}
	if ref.Port == nil {
		return []string{fmt.Sprintf("%s routes to Service %q without a port", owner, ref.Name)}
	}
	for _, port := range service.Spec.Ports {
		if port.Port != int32(*ref.Port) {
			continue
		}
		if port.AppProtocol == nil || *port.AppProtocol != "kubernetes.io/h2c" {
			return []string{fmt.Sprintf("%s routes to Service %q port %d, whose appProtocol is not kubernetes.io/h2c", owner, ref.Name, port.Port)}
		}
		return nil
	}
	return []string{fmt.Sprintf("%s routes to Service %q port %d, which the Service does not expose", owner, ref.Name, *ref.Port)}
}

// checkMinReplicas returns every Deployment whose replicas, and every
// HorizontalPodAutoscaler whose minReplicas, is below minimum.
func checkMinReplicas(objects []renderedObject, minimum int32) []string {
	var problems []string
	for _, o := range objects {
		switch v := o.Value.(type) {
		case *appsv1.Deployment:
			replicas := int32(1) // the API server's default
			if v.Spec.Replicas != nil {
				replicas = *v.Spec.Replicas
			}
			if replicas < minimum {
				problems = append(problems, fmt.Sprintf("%s has %d replicas, want at least %d", o, replicas, minimum))
			}
		case *autoscalingv2.HorizontalPodAutoscaler:
			minReplicas := int32(1)
			if v.Spec.MinReplicas != nil {
				minReplicas = *v.Spec.MinReplicas
			}
			if minReplicas < minimum {
				problems = append(problems, fmt.Sprintf("%s has minReplicas %d, want at least %d", o, minReplicas, minimum))
			}
		}
	}
	return problems
}
