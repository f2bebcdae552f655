use super::*;
use std::path::Path;

fn net(text: &str) -> IpNet {
    text.parse().expect("a CIDR")
}

fn argv(line: &str) -> Vec<String> {
    line.split_whitespace().map(String::from).collect()
}

fn file(text: &str) -> Settings {
    ini::parse(Path::new("/etc/openvswitch/ovn_k8s.conf"), text).expect("parses")
}

fn flags(line: &str) -> Settings {
    cmdline::parse(&argv(line))
        .expect("parses")
        .expect("an ovnkube-node")
        .settings
}

const FILE: fn() -> FileRef = || FileRef {
    path: "/etc/openvswitch/ovn_k8s.conf".into(),
    named_by: FileNamedBy::OvnkubeDefault,
};

#[test]
fn ovnkubes_file_gives_every_fact_we_read() {
    let settings = file(
        "# written by the cluster installer\n\
         [default]\n\
         mtu=1400\n\
         cluster-subnets = \"10.128.0.0/14/23,fd00:10:244::/48/64\"\n\
         encap-port=6081\n\
         \n\
         [Kubernetes]\n\
         service-cidrs=172.30.0.0/16\n\
         [gateway]\n\
         mode=shared\n\
         v4-masquerade-subnet='169.254.0.0/17'\n\
         [OvnKubeNode]\n\
         mode=dpu\n",
    );
    let facts = resolve(None, Some((&settings, FILE())));
    assert_eq!(
        facts.cluster_subnets.value,
        vec![net("10.128.0.0/14"), net("fd00:10:244::/48")]
    );
    assert_eq!(facts.service_cidrs.value, vec![net("172.30.0.0/16")]);
    assert_eq!(facts.v4_masquerade.value, net("169.254.0.0/17"));
    assert_eq!(facts.gateway_mode.value, "shared");
    assert_eq!(facts.node_mode.value, "dpu");
    assert_eq!(
        facts.v4_masquerade.origin.to_string(),
        "from /etc/openvswitch/ovn_k8s.conf (ovnkube's default file)"
    );
    // Not in the file: ovnkube's own default, the real one.
    assert_eq!(facts.v6_masquerade.value, net("fd69::/125"));
    assert_eq!(
        facts.v6_masquerade.origin.to_string(),
        "OVN-Kubernetes' default (ovnkube sets none)"
    );
}

#[test]
fn gcfg_syntax_ovnkube_takes_is_taken() {
    let settings = file(
        "[default]\nmtu = 1300 ; set by the installer\nenable-multicast\ncluster-subnets = \"10.1.0.0/16\" # quoted\n[gateway]\nmode=shared # comment\n",
    );
    assert_eq!(settings.mtu.map(|m| m.value), Some(1300));
    assert_eq!(
        settings.gateway_mode.map(|m| m.value),
        Some("shared".into())
    );
    assert_eq!(
        settings.cluster_subnets.map(|c| c.value),
        Some(vec![net("10.1.0.0/16")])
    );
    // Inside quotes a ';' is part of the value: ovnkube would refuse it too.
    let error = ini::parse(
        Path::new("f"),
        "[default]\ncluster-subnets = \"10.1.0.0/16;x\"\n",
    )
    .expect_err("not a CIDR")
    .to_string();
    assert!(error.contains("10.1.0.0/16;x"), "{error}");
}

#[test]
fn a_bad_value_in_the_file_names_its_line_and_value() {
    for (text, line, needle) in [
        (
            "[default]\ncluster-subnets=10.128.0.0/33/23\n",
            2,
            "10.128.0.0/33/23",
        ),
        (
            "[default]\ncluster-subnets=10.128.0.0/14/x\n",
            2,
            "host prefix \"x\"",
        ),
        ("\n[default]\nmtu=big\n", 3, "mtu \"big\""),
        (
            "[gateway]\nv6-masquerade-subnet=169.254.0.0/17\n",
            2,
            "other address family",
        ),
        (
            "[gateway]\nmode=sideways\n",
            2,
            "\"sideways\" is not one of shared, local",
        ),
        ("[default\n", 1, "section"),
        ("[default]\njust words\n", 2, "key = value"),
    ] {
        let error = ini::parse(Path::new("ovn_k8s.conf"), text)
            .expect_err(text)
            .to_string();
        assert!(
            error.contains(&format!("line {line}:")) && error.contains(needle),
            "{error}"
        );
    }
}

/// Each way a deployment hands ovnkube its facts, and what ovnkube (and
/// so the agent) ends up with.
#[test]
fn facts_resolve_as_ovnkube_resolves_them_in_every_deployment_shape() {
    let helm = flags(
        "/usr/bin/ovnkube --init-node node1 --cluster-subnets 10.244.0.0/16/24 --k8s-service-cidr=10.96.0.0/16 \
         --gateway-mode=shared --nodeport --mtu=1500 --gateway-v4-masquerade-subnet=169.254.0.0/17 \
         --ovnkube-node-mode=dpu",
    );
    let package_file = file("[default]\nmtu=1400\nconntrack-zone=64000\n");
    let openshift_file = file(
        "[default]\nmtu=8900\ncluster-subnets=10.128.0.0/14/23\n[kubernetes]\nservice-cidrs=172.30.0.0/16\n[gateway]\nmode=shared\n",
    );
    type Shape<'a> = (
        &'a str,
        Option<&'a Settings>,
        Option<&'a Settings>,
        [&'a str; 4],
    );
    let cases: [Shape; 5] = [
        (
            "flags only (helm, upstream daemonset)",
            Some(&helm),
            Some(&package_file),
            [
                "10.244.0.0/16 from ovnkube's command line (pid 42, --cluster-subnets)",
                "1500 from ovnkube's command line (pid 42, --mtu)",
                "169.254.0.0/17 from ovnkube's command line (pid 42, --gateway-v4-masquerade-subnet)",
                "10.96.0.0/16 from ovnkube's command line (pid 42, --k8s-service-cidr)",
            ],
        ),
        (
            "--config-file only (OpenShift)",
            Some(&flags(
                "ovnkube --init-node node1 --config-file=/run/ovnkube-config/ovnkube.conf",
            )),
            Some(&openshift_file),
            [
                "10.128.0.0/14 from /etc/openvswitch/ovn_k8s.conf (ovnkube's default file)",
                "8900 from /etc/openvswitch/ovn_k8s.conf (ovnkube's default file)",
                "169.254.169.0/29 OVN-Kubernetes' default (ovnkube sets none)",
                "172.30.0.0/16 from /etc/openvswitch/ovn_k8s.conf (ovnkube's default file)",
            ],
        ),
        (
            "the package's file only",
            None,
            Some(&package_file),
            [
                "10.128.0.0/14 OVN-Kubernetes' default (ovnkube sets none)",
                "1400 from /etc/openvswitch/ovn_k8s.conf (ovnkube's default file)",
                "169.254.169.0/29 OVN-Kubernetes' default (ovnkube sets none)",
                "172.16.1.0/24 OVN-Kubernetes' default (ovnkube sets none)",
            ],
        ),
        (
            "flag and file disagree: the flag wins",
            Some(&flags(
                "ovnkube --init-node node1 --mtu 9000 -gateway-v4-masquerade-subnet 169.254.64.0/18",
            )),
            Some(&file(
                "[default]\nmtu=8900\n[gateway]\nv4-masquerade-subnet=169.254.0.0/17\n",
            )),
            [
                "10.128.0.0/14 OVN-Kubernetes' default (ovnkube sets none)",
                "9000 from ovnkube's command line (pid 42, --mtu)",
                "169.254.64.0/18 from ovnkube's command line (pid 42, --gateway-v4-masquerade-subnet)",
                "172.16.1.0/24 OVN-Kubernetes' default (ovnkube sets none)",
            ],
        ),
        (
            "nothing set: the real defaults",
            Some(&flags("ovnkube --init-node node1")),
            None,
            [
                "10.128.0.0/14 OVN-Kubernetes' default (ovnkube sets none)",
                "1400 OVN-Kubernetes' default (ovnkube sets none)",
                "169.254.169.0/29 OVN-Kubernetes' default (ovnkube sets none)",
                "172.16.1.0/24 OVN-Kubernetes' default (ovnkube sets none)",
            ],
        ),
    ];
    for (shape, command_line, from_file, expected) in cases {
        let facts = resolve(
            command_line.map(|settings| (settings, 42)),
            from_file.map(|settings| (settings, FILE())),
        );
        let shown = [
            format!(
                "{} {}",
                facts
                    .cluster_subnets
                    .value
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
                facts.cluster_subnets.origin
            ),
            format!("{} {}", facts.mtu.value, facts.mtu.origin),
            format!(
                "{} {}",
                facts.v4_masquerade.value, facts.v4_masquerade.origin
            ),
            format!(
                "{} {}",
                facts
                    .service_cidrs
                    .value
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
                facts.service_cidrs.origin
            ),
        ];
        assert_eq!(shown, expected, "{shape}");
        assert_eq!(
            facts.v6_masquerade.value,
            net(DEFAULT_V6_MASQUERADE),
            "{shape}"
        );
    }
}

#[test]
fn a_flag_that_says_the_default_overrides_nothing_as_in_ovnkube() {
    // ovnkube skips a setting equal to its default when layering, so
    // --mtu=1400 leaves the file's 9000 in force.
    let facts = resolve(
        Some((&flags("ovnkube --init-node n --mtu=1400"), 7)),
        Some((&file("[default]\nmtu=9000\n"), FILE())),
    );
    assert_eq!(facts.mtu.value, 9000);
    // Alone, it is the value, named by the flag that says it.
    let facts = resolve(Some((&flags("ovnkube --init-node n --mtu=1400"), 7)), None);
    assert_eq!(facts.mtu.value, 1400);
    assert_eq!(
        facts.mtu.origin.to_string(),
        "from ovnkube's command line (pid 7, --mtu)"
    );
    // The deprecated settings replace the rest.
    let facts = resolve(
        Some((
            &flags(
                "ovnkube --init-node n --cluster-subnets=10.1.0.0/16 --cluster-subnet=10.2.0.0/16 --k8s-service-cidrs=10.3.0.0/16 --service-cluster-ip-range=10.4.0.0/16",
            ),
            7,
        )),
        Some((&file("[kubernetes]\nservice-cidr=10.5.0.0/16\n"), FILE())),
    );
    assert_eq!(facts.cluster_subnets.value, vec![net("10.2.0.0/16")]);
    assert_eq!(facts.service_cidrs.value, vec![net("10.4.0.0/16")]);
    let facts = resolve(
        Some((
            &flags("ovnkube --init-node n --k8s-service-cidrs=10.3.0.0/16"),
            7,
        )),
        Some((&file("[kubernetes]\nservice-cidr=10.5.0.0/16\n"), FILE())),
    );
    assert_eq!(facts.service_cidrs.value, vec![net("10.5.0.0/16")]);
}

#[test]
fn the_command_line_is_read_as_gos_flag_package_reads_it() {
    let read = |line: &str| cmdline::parse(&argv(line));
    // Not ovnkube, or not a node: nothing to read.
    for line in [
        "/usr/sbin/ovs-vswitchd --pidfile",
        // Not a node: a bad value (or flag) of its own is not ours to refuse.
        "/usr/bin/ovnkube --init-cluster-manager n --mtu=big",
        "/usr/bin/ovnkube --init-cluster-manager n --mtu",
        "/usr/bin/ovnkube-trace --init-node n",
        "/usr/bin/ovnkube --init-cluster-manager n",
        "/usr/bin/ovnkube --init-node=",
    ] {
        assert_eq!(read(line), Ok(None), "{line}");
    }
    assert_eq!(cmdline::parse(&[]), Ok(None));
    let invocation = read(
        "/usr/bin/ovnkube -init-ovnkube-controller n --init-node node7 -mtu 1300 --mtu=1350 \
         --config-file /run/ovnkube-config/ovnkube.conf --enable-multicast --loglevel 4 -- --mtu=1",
    )
    .expect("parses")
    .expect("a node");
    assert_eq!(invocation.node, "node7");
    assert_eq!(
        invocation.config_file,
        Some("/run/ovnkube-config/ovnkube.conf".into())
    );
    // The last of a repeated flag wins; nothing after "--" is a flag.
    assert_eq!(invocation.settings.mtu.map(|m| m.value), Some(1350));
    // Parsing stops at the first argument that is not a flag.
    let stopped = read("ovnkube --init-node n stray --mtu=1300")
        .expect("parses")
        .expect("a node");
    assert_eq!(stopped.settings.mtu, None);
}

#[test]
fn an_odd_command_line_is_refused_with_the_reason() {
    for (line, needle) in [
        (
            "ovnkube --init-node n ---mtu=1",
            "\"---mtu=1\" is not a flag",
        ),
        ("ovnkube --init-node n --=1", "not a flag"),
        ("ovnkube --init-node n --mtu", "--mtu has no value"),
        (
            "ovnkube --init-node n --mtu=big",
            "--mtu \"big\" is not a number",
        ),
        (
            "ovnkube --init-node n --cluster-subnets=10.0.0.0/33",
            "--cluster-subnets entry \"10.0.0.0/33\"",
        ),
        (
            "ovnkube --init-node n --gateway-v4-masquerade-subnet=fd69::/125",
            "other address family",
        ),
        (
            "ovnkube --init-node n --config-file=/run/../etc/shadow",
            "climbs",
        ),
        (
            "ovnkube --init-node n --ovnkube-node-mode=half",
            "not one of full, dpu, dpu-host",
        ),
    ] {
        let error = cmdline::parse(&argv(line)).expect_err(line);
        assert!(error.contains(needle), "{line}: {error}");
    }
    let mut many = argv("ovnkube --init-node n");
    many.extend((0..cmdline::MAX_ARGUMENTS).map(|_| "--nodeport".to_string()));
    assert!(
        cmdline::parse(&many)
            .expect_err("too many")
            .contains("arguments, more than")
    );
    let long = vec![
        "ovnkube".to_string(),
        format!("--init-node={}", "n".repeat(cmdline::MAX_ARGUMENT_BYTES)),
    ];
    assert!(
        cmdline::parse(&long)
            .expect_err("too long")
            .contains("bytes")
    );
}

mod proc_dir;
