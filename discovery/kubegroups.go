package discovery

// How the Kubernetes objects listed become groups of replicas: Services
// with their EndpointSlices, EndpointSlices alone, and Pods.

import (
	"cmp"
	"fmt"
	"maps"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/prometheus/prometheus/model/labels"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8slabels "k8s.io/apimachinery/pkg/labels"
)

// groups turns the objects into groups, sorted by name, replicas sorted by
// URL, so equal clusters give equal lists.
func (k *Kubernetes) groups(o kubeObjects) []*Group {
	var out []*Group
	serviceGroups := map[string]bool{}
	if k.s.services {
		slicesByService := map[string][]*discoveryv1.EndpointSlice{}
		for _, sl := range o.slices {
			if svc := sl.Labels[discoveryv1.LabelServiceName]; svc != "" {
				key := sl.Namespace + "/" + svc
				slicesByService[key] = append(slicesByService[key], sl)
			}
		}
		for _, svc := range o.services {
			if !k.annotationsMatch(svc.Annotations) {
				continue
			}
			g, reason := k.serviceGroup(svc, slicesByService[svc.Namespace+"/"+svc.Name])
			if g == nil {
				k.logger.Debug("service skipped", "service", svc.Namespace+"/"+svc.Name, "reason", reason)
				continue
			}
			serviceGroups[svc.Namespace+"/"+svc.Name] = true
			out = append(out, g)
		}
	}
	if k.s.slices {
		out = append(out, k.sliceGroups(o, serviceGroups)...)
	}
	if k.s.pods {
		out = append(out, k.podGroups(o.pods)...)
	}
	for _, g := range out {
		slices.SortFunc(g.Replicas, func(a, b *Replica) int { return cmp.Compare(a.URL, b.URL) })
		g.Replicas = slices.CompactFunc(g.Replicas, func(a, b *Replica) bool { return a.URL == b.URL })
		k.decorate(g)
	}
	slices.SortFunc(out, func(a, b *Group) int { return cmp.Compare(a.Name, b.Name) })
	return out
}

// decorate gives a group what its cluster entry says of all its groups:
// the entry's name (group names stay unique across clusters), labels, HTTP
// client settings and, through the API server, its transport.
func (k *Kubernetes) decorate(g *Group) {
	if k.s.name != "" {
		g.Name = k.s.name + "/" + g.Name
		g.Source = "kubernetes " + k.s.name + ": " + strings.TrimPrefix(g.Source, "kubernetes ")
	}
	if !k.s.labels.IsEmpty() {
		b := labels.NewBuilder(g.Labels)
		k.s.labels.Range(func(l labels.Label) { b.Set(l.Name, l.Value) })
		g.Labels = b.Labels()
	}
	g.HTTPClient = k.s.httpClient
	if k.s.access == AccessAPIServer {
		g.Transport = k.apiTransport
	}
}

// proxyURL is a backend reached through the API server: kind is "services"
// or "pods", port a port name or number.
func (k *Kubernetes) proxyURL(kind, ns, name, port string) string {
	target := name + ":" + port
	if k.s.scheme == "https" {
		target = "https:" + target
	}
	return k.apiHost + "/api/v1/namespaces/" + url.PathEscape(ns) + "/" + kind + "/" + url.PathEscape(target) + "/proxy" + k.s.pathPrefix
}

func (k *Kubernetes) annotationsMatch(have map[string]string) bool {
	for key, want := range k.s.annotations {
		if v, ok := have[key]; !ok || v != want {
			return false
		}
	}
	return true
}

func (k *Kubernetes) url(host string, port int32) string {
	return k.s.scheme + "://" + net.JoinHostPort(host, strconv.Itoa(int(port))) + k.s.pathPrefix
}

// serviceGroup makes one group of a Service: its ready endpoints, or its
// externalName. A Service with no ready endpoint is still a group (with no
// replica), so queries warn that its data is missing instead of silently
// leaving it out. nil and the reason when the Service lacks the port.
func (k *Kubernetes) serviceGroup(svc *corev1.Service, eps []*discoveryv1.EndpointSlice) (*Group, string) {
	key := svc.Namespace + "/" + svc.Name
	g := &Group{
		Name:   "service/" + key,
		Source: "kubernetes service " + key,
		Labels: labels.FromStrings(LabelNamespace, svc.Namespace, LabelServiceName, svc.Name),
	}
	sp := k.servicePort(svc)
	switch k.s.access {
	case AccessAPIServer:
		if sp == nil {
			return nil, "service has no port " + k.portString()
		}
		if svc.Spec.Type == corev1.ServiceTypeExternalName {
			return nil, "the API server does not proxy to ExternalName services"
		}
		// The API server picks one ready endpoint per request.
		g.Replicas = []*Replica{newReplica(k.proxyURL("services", svc.Namespace, svc.Name, cmp.Or(sp.Name, strconv.Itoa(int(sp.Port)))))}
		return g, ""
	case AccessLoadBalancer:
		if sp == nil {
			return nil, "service has no port " + k.portString()
		}
		for _, ing := range svc.Status.LoadBalancer.Ingress {
			if host := cmp.Or(ing.IP, ing.Hostname); host != "" {
				g.Replicas = append(g.Replicas, newReplica(k.url(host, sp.Port)))
			}
		}
		return g, ""
	}
	if svc.Spec.Type == corev1.ServiceTypeExternalName {
		port := k.s.portNumber
		if sp != nil {
			port = sp.Port
		}
		if port == 0 {
			return nil, fmt.Sprintf("ExternalName service has no port named %q", k.s.portName)
		}
		if svc.Spec.ExternalName == "" {
			return nil, "ExternalName service without externalName"
		}
		g.Replicas = []*Replica{newReplica(k.url(svc.Spec.ExternalName, port))}
		return g, ""
	}
	if sp == nil {
		return nil, "service has no port " + k.portString()
	}
	for _, sl := range eps {
		port, ok := slicePort(sl, sp.Name)
		if !ok {
			continue
		}
		for _, host := range readyAddresses(sl) {
			g.Replicas = append(g.Replicas, newReplica(k.url(host, port)))
		}
	}
	return g, ""
}

func (k *Kubernetes) portString() string {
	if k.s.portName != "" {
		return strconv.Quote(k.s.portName)
	}
	return strconv.Itoa(int(k.s.portNumber))
}

// servicePort is the Service port the configured port names: by number or
// by name.
func (k *Kubernetes) servicePort(svc *corev1.Service) *corev1.ServicePort {
	for i, sp := range svc.Spec.Ports {
		if sp.Protocol != "" && sp.Protocol != corev1.ProtocolTCP {
			continue
		}
		if (k.s.portName != "" && sp.Name == k.s.portName) || (k.s.portNumber != 0 && sp.Port == k.s.portNumber) {
			return &svc.Spec.Ports[i]
		}
	}
	return nil
}

// slicePort finds the endpoint port of a slice by name; a slice's ports carry
// the names of the Service's ports.
func slicePort(sl *discoveryv1.EndpointSlice, name string) (int32, bool) {
	for _, p := range sl.Ports {
		if p.Port == nil || (p.Protocol != nil && *p.Protocol != corev1.ProtocolTCP) {
			continue
		}
		if (p.Name == nil && name == "") || (p.Name != nil && *p.Name == name) {
			return *p.Port, true
		}
	}
	return 0, false
}

// readyAddresses lists the addresses of the slice's ready endpoints. An
// endpoint without a ready condition counts as ready, as the API defines.
func readyAddresses(sl *discoveryv1.EndpointSlice) []string {
	var out []string
	for _, ep := range sl.Endpoints {
		if ep.Conditions.Ready != nil && !*ep.Conditions.Ready {
			continue
		}
		out = append(out, ep.Addresses...)
	}
	return out
}

// sliceGroups makes one group per Service named by the slices'
// kubernetes.io/service-name label (one per slice without it), leaving out
// Services that already are a group of their own.
func (k *Kubernetes) sliceGroups(o kubeObjects, serviceGroups map[string]bool) []*Group {
	byKey := map[string]*Group{}
	var order []string
	for _, sl := range o.slices {
		if o.slicesUnfiltered && !k.s.selector.Matches(k8slabels.Set(sl.Labels)) {
			continue
		}
		if !k.annotationsMatch(sl.Annotations) {
			continue
		}
		svc := sl.Labels[discoveryv1.LabelServiceName]
		if svc != "" && serviceGroups[sl.Namespace+"/"+svc] {
			continue
		}
		var key string
		lbls := []string{LabelNamespace, sl.Namespace}
		if svc != "" {
			key = sl.Namespace + "/" + svc
			lbls = append(lbls, LabelServiceName, svc)
		} else {
			key = sl.Namespace + "/" + sl.Name
			lbls = append(lbls, LabelEndpointSlice, sl.Name)
		}
		g := byKey[key]
		if g == nil {
			g = &Group{Name: "endpointslice/" + key, Source: "kubernetes endpointslices " + key, Labels: labels.FromStrings(lbls...)}
			byKey[key] = g
			order = append(order, key)
		}
		port := k.s.portNumber
		if k.s.portName != "" {
			var ok bool
			if port, ok = slicePort(sl, k.s.portName); !ok {
				k.logger.Debug("endpointslice skipped", "endpointslice", sl.Namespace+"/"+sl.Name, "reason", "no port "+k.portString())
				continue
			}
		}
		for _, host := range readyAddresses(sl) {
			g.Replicas = append(g.Replicas, newReplica(k.url(host, port)))
		}
	}
	out := make([]*Group, 0, len(order))
	for _, key := range order {
		out = append(out, byKey[key])
	}
	return out
}

// podGroups groups pods by the first group label they carry (and their
// prometheus-operator shard); a pod without any is a group of its own. Pods
// that are not Running and Ready still make their group exist, without a
// replica, so a Prometheus whose pods are all down shows up as missing data.
func (k *Kubernetes) podGroups(pods []*corev1.Pod) []*Group {
	type podGroup struct {
		g      *Group
		owners map[[2]string]bool
	}
	byName := map[string]*podGroup{}
	for _, pod := range pods {
		if pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
			continue
		}
		if !k.annotationsMatch(pod.Annotations) {
			continue
		}
		port, ok := k.podPort(pod)
		if !ok {
			k.logger.Debug("pod skipped", "pod", pod.Namespace+"/"+pod.Name, "reason", "no container port "+k.portString())
			continue
		}
		name, lbls := k.podGroupOf(pod)
		pg := byName[name]
		if pg == nil {
			pg = &podGroup{
				g:      &Group{Name: name, Source: "kubernetes " + name, Labels: labels.FromStrings(lbls...)},
				owners: map[[2]string]bool{},
			}
			byName[name] = pg
		}
		var owner [2]string
		if ref := metav1.GetControllerOf(pod); ref != nil {
			owner = [2]string{ref.Kind, ref.Name}
		}
		pg.owners[owner] = true
		if podReady(pod) {
			u := k.url(pod.Status.PodIP, port)
			if k.s.access == AccessAPIServer {
				u = k.proxyURL("pods", pod.Namespace, pod.Name, strconv.Itoa(int(port)))
			}
			pg.g.Replicas = append(pg.g.Replicas, newReplica(u))
		}
	}
	out := make([]*Group, 0, len(byName))
	for _, pg := range byName {
		// The owner is a label only when every pod of the group agrees.
		if len(pg.owners) == 1 {
			for owner := range maps.Keys(pg.owners) {
				if owner[0] != "" {
					b := labels.NewBuilder(pg.g.Labels)
					b.Set(LabelControllerKind, owner[0]).Set(LabelControllerName, owner[1])
					pg.g.Labels = b.Labels()
				}
			}
		}
		out = append(out, pg.g)
	}
	return out
}

// podGroupOf names the group of a pod and gives its labels.
func (k *Kubernetes) podGroupOf(pod *corev1.Pod) (string, []string) {
	for _, l := range k.s.groupLabels {
		v := pod.Labels[l]
		if v == "" {
			continue
		}
		name := "pods/" + pod.Namespace + "/" + l + "=" + v
		lbls := []string{LabelNamespace, pod.Namespace, LabelPodLabelPrefix + sanitizeLabelName(l), v}
		if shard := pod.Labels[operatorShardLabel]; shard != "" {
			name += "," + operatorShardLabel + "=" + shard
			lbls = append(lbls, LabelPodLabelPrefix+sanitizeLabelName(operatorShardLabel), shard)
		}
		return name, lbls
	}
	return "pod/" + pod.Namespace + "/" + pod.Name, []string{LabelNamespace, pod.Namespace, LabelPodName, pod.Name}
}

// podPort is the port by number, or the container port of that name.
func (k *Kubernetes) podPort(pod *corev1.Pod) (int32, bool) {
	if k.s.portNumber != 0 {
		return k.s.portNumber, true
	}
	for _, c := range pod.Spec.Containers {
		for _, p := range c.Ports {
			if p.Name == k.s.portName && (p.Protocol == "" || p.Protocol == corev1.ProtocolTCP) {
				return p.ContainerPort, true
			}
		}
	}
	return 0, false
}

// podReady: Running, Ready, not terminating, with an IP.
func podReady(pod *corev1.Pod) bool {
	if pod.Status.Phase != corev1.PodRunning || pod.DeletionTimestamp != nil || pod.Status.PodIP == "" {
		return false
	}
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// sanitizeLabelName maps a Kubernetes label name to a Prometheus one the way
// Prometheus' own Kubernetes discovery does.
func sanitizeLabelName(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '_' || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9') {
			return r
		}
		return '_'
	}, s)
}

// groupsFingerprint identifies a list of groups by what a query sees of it.
func groupsFingerprint(gs []*Group) string {
	var b strings.Builder
	for _, g := range gs {
		b.WriteString(g.Name)
		b.WriteByte('\x00')
		b.WriteString(g.Labels.String())
		for _, r := range g.Replicas {
			b.WriteByte('\x00')
			b.WriteString(r.URL)
		}
		b.WriteByte('\n')
	}
	return b.String()
}
