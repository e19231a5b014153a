// Command kube is the lab's build of the real Kubernetes control plane,
// kube-proxy, kubectl and etcd, from their published Go modules, in one
// binary (as hyperkube was). It runs the component named by the name it was
// called by (a symlink: kube-apiserver, kube-controller-manager,
// kube-scheduler, kube-proxy, kubectl, etcd) or by its first argument
// (`kube kube-apiserver --help`).
//
// Nothing here changes how a component behaves: each entry point is the one
// its own cmd/ main calls.
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"go.etcd.io/etcd/server/v3/etcdmain"
	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	kubectl "k8s.io/kubectl/pkg/cmd"
	kubectlutil "k8s.io/kubectl/pkg/cmd/util"
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	proxy "k8s.io/kubernetes/cmd/kube-proxy/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
	_ "time/tzdata"
)

var components = map[string]func(args []string) int{
	"kube-apiserver": func([]string) int { return cli.Run(apiserver.NewAPIServerCommand()) },
	"kube-controller-manager": func([]string) int {
		return cli.Run(controllermanager.NewControllerManagerCommand())
	},
	"kube-scheduler": func([]string) int { return cli.Run(scheduler.NewSchedulerCommand()) },
	"kube-proxy":     func([]string) int { return cli.Run(proxy.NewProxyCommand()) },
	"kubectl": func([]string) int {
		if err := cli.RunNoErrOutput(kubectl.NewDefaultKubectlCommand()); err != nil {
			// Prints the error as kubectl does and exits with its code.
			kubectlutil.CheckErr(err)
		}
		return 0
	},
	"etcd": func(args []string) int {
		etcdmain.Main(args)
		return 0
	},
}

func main() {
	name := filepath.Base(os.Args[0])
	if _, ok := components[name]; !ok && len(os.Args) > 1 {
		// `kube <component> args...`: the component sees itself as argv[0].
		name = os.Args[1]
		os.Args = os.Args[1:]
	}
	run, ok := components[name]
	if !ok {
		names := make([]string, 0, len(components))
		for n := range components {
			names = append(names, n)
		}
		sort.Strings(names)
		fmt.Fprintf(os.Stderr, "usage: kube <component> [args...], or call it through a symlink named after the component\ncomponents: %v\n", names)
		os.Exit(2)
	}
	os.Exit(run(os.Args))
}
