//! The OpenFlow 1.4 codec (the noverlay-openflow crate, as dpu-agent uses it) against Open vSwitch itself:
//! every planned flow, encoded by us, decodes with `ovs-ofctl ofp-print`
//! to exactly what ovs-ofctl makes of the same flow text; and a bundle
//! sent over a real connection to the bridge's management socket installs
//! the flows OVS shows for the ovs-ofctl path (the golden dump), read back
//! with a flow-stats request.

use dpu_agent::{
    flows::{self, BasePipeline, FlowSettings, PortMap},
    switch,
    twins::TwinChecks,
};
use noverlay_openflow::{session::Endpoint, spec::FlowSpec, wire};
use noverlay_proto::contract::{FamilyContract, Masquerade, Mode, Offer};
use noverlay_tests::{
    netns,
    ovs::{self, Switch},
};
use std::{
    io::{Read, Write},
    os::unix::net::UnixStream,
    process::Command,
    time::{Duration, Instant},
};

const COOKIE: u64 = 0x6e6f_7672;

fn offer(dual: bool) -> Offer {
    let mut families = vec![FamilyContract {
        masquerade: Masquerade::from_subnet("169.254.0.0/17".parse().expect("net")).expect("masq"),
        cluster_cidrs: vec!["198.18.128.0/17".parse().expect("cidr")],
        underlay_ip: "198.18.0.10".parse().expect("ip"),
    }];
    if dual {
        families.push(FamilyContract {
            masquerade: Masquerade::from_subnet("fd69::/112".parse().expect("net")).expect("masq"),
            cluster_cidrs: vec!["fd00:10:244::/48".parse().expect("cidr")],
            underlay_ip: "2001:db8::10".parse().expect("ip"),
        });
    }
    Offer::new(1, Mode::IN_SCOPE, families, 1400).expect("offer")
}

fn planned(dual: bool) -> Vec<flows::Flow> {
    let ports = PortMap {
        host_representor: 1,
        patch: 2,
        uplink: 3,
        bridge_mac: [0x02, 0, 0xc6, 0x12, 0, 0x0a],
    };
    let settings = FlowSettings {
        cookie: COOKIE,
        base_pipeline: BasePipeline::On,
        ct_zone: flows::DEFAULT_CT_ZONE,
    };
    flows::plan_flows(&offer(dual), &ports, &settings)
}

/// Every planned flow (both families), encoded by us as a flow mod of
/// `version`, decodes with `ovs-ofctl ofp-print` exactly as ovs-ofctl
/// parses the flow's text in that version.
fn assert_flow_mods_read_as_ovs_parses(version: u8) -> anyhow::Result<()> {
    let name = wire::version_name(version);
    for flow in planned(true) {
        let text = flow.render(COOKIE);
        let spec = FlowSpec::parse(
            COOKIE,
            flow.table,
            flow.priority,
            &flow.matches,
            &flow.actions,
        )?;
        let ours = ofctl(&[
            "ofp-print",
            &hex(&wire::with_version(wire::flow_add(1, &spec, 0), version)),
        ])?;
        let theirs = ofctl(&["-O", &name, "parse-flow", &text])?;
        let theirs = theirs
            .lines()
            .find(|l| l.starts_with("OFPT_FLOW_MOD"))
            .unwrap_or_default();
        assert_eq!(ours, theirs, "{name}: {text}");
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn ofctl(args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new("ovs-ofctl").args(args).output()?;
    anyhow::ensure!(
        output.status.success(),
        "ovs-ofctl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
}

#[test]
#[ignore = "needs ovs-ofctl (package openvswitch-common); run with --include-ignored (CI does)"]
fn every_planned_flow_encodes_to_what_ovs_ofctl_makes_of_its_text() -> anyhow::Result<()> {
    ovs::require()?;
    assert_flow_mods_read_as_ovs_parses(wire::OF14)?;
    // The cookie-scoped delete and a bundle wrapping it.
    let delete = wire::delete_cookie(7, COOKIE);
    assert_eq!(
        ofctl(&["ofp-print", &hex(&delete)])?,
        "OFPT_FLOW_MOD (OF1.4) (xid=0x7): DEL table:255 cookie:0x6e6f7672/0xffffffffffffffff actions=drop"
    );
    let added = ofctl(&[
        "ofp-print",
        &hex(&wire::bundle_add(
            wire::OF14,
            7,
            3,
            wire::OFPBF_ATOMIC_ORDERED,
            &delete,
        )),
    ])?;
    assert!(
        added.starts_with(
            "OFPT_BUNDLE_ADD_MESSAGE (OF1.4) (xid=0x7):\n bundle_id=0x3 flags=atomic ordered"
        ) && added.contains("DEL table:255 cookie:0x6e6f7672/0xffffffffffffffff"),
        "{added}"
    );
    // (ofp-print does not show a stats request's cookie: the filter is
    // checked against the switch in the test below.)
    let stats = ofctl(&[
        "ofp-print",
        &hex(&wire::flow_stats_request(8, COOKIE, u64::MAX)),
    ])?;
    assert_eq!(stats, "OFPST_FLOW request (OF1.4) (xid=0x8):");
    Ok(())
}

/// OpenFlow 1.3's forms of what a 1.4 session sends: the hello offers both
/// versions, bundles and the flow monitor go as the Open Networking
/// Foundation extensions Open vSwitch decodes in 1.3, and a flow mod is
/// the same bytes with the 1.3 version number.
#[test]
#[ignore = "needs Open vSwitch (ovs-ofctl); run with --include-ignored (CI does)"]
fn the_openflow_13_forms_decode_as_open_vswitch_reads_them() -> anyhow::Result<()> {
    ovs::require()?;
    assert_eq!(
        ofctl(&["ofp-print", &hex(&wire::hello(1))])?,
        "OFPT_HELLO (OF1.4) (xid=0x1):\n version bitmap: 0x04, 0x05"
    );
    let delete = wire::delete_cookie(7, COOKIE);
    let added = ofctl(&[
        "ofp-print",
        &hex(&wire::bundle_add(
            wire::OF13,
            7,
            3,
            wire::OFPBF_ATOMIC_ORDERED,
            &delete,
        )),
    ])?;
    assert!(
        added.starts_with(
            "ONFT_BUNDLE_ADD_MESSAGE (OF1.3) (xid=0x7):\n bundle_id=0x3 flags=atomic ordered"
        ) && added.contains(
            "OFPT_FLOW_MOD (OF1.3) (xid=0x7): DEL table:255 cookie:0x6e6f7672/0xffffffffffffffff"
        ),
        "{added}"
    );
    let commit = ofctl(&[
        "ofp-print",
        &hex(&wire::bundle_control(
            wire::OF13,
            9,
            3,
            wire::OFPBCT_COMMIT_REQUEST,
            wire::OFPBF_ATOMIC_ORDERED,
        )),
    ])?;
    assert_eq!(
        commit,
        "ONFT_BUNDLE_CONTROL (OF1.3) (xid=0x9):\n bundle_id=0x3 type=COMMIT_REQUEST flags=atomic ordered"
    );
    let monitor = ofctl(&[
        "ofp-print",
        &hex(&wire::flow_monitor_request(wire::OF13, 4, 4)),
    ])?;
    assert!(
        monitor.starts_with(
            "ONFST_FLOW_MONITOR request (OF1.3) (xid=0x4):\n id=4 flags=add,delete,modify"
        ),
        "{monitor}"
    );
    // Every planned flow as a 1.3 flow mod: what ovs-ofctl makes of its text in 1.3.
    assert_flow_mods_read_as_ovs_parses(wire::OF13)?;
    Ok(())
}

/// One request/reply conversation over the management socket, blocking.
struct Connection {
    stream: UnixStream,
    xid: u32,
}

impl Connection {
    fn open(path: &str) -> anyhow::Result<Self> {
        let stream = UnixStream::connect(path)?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut connection = Connection { stream, xid: 1 };
        connection.send(&wire::hello(0))?;
        let hello = connection.receive()?;
        anyhow::ensure!(hello[1] == wire::OFPT_HELLO, "no hello: {hello:?}");
        Ok(connection)
    }

    fn next_xid(&mut self) -> u32 {
        self.xid += 1;
        self.xid
    }

    fn send(&mut self, message: &[u8]) -> anyhow::Result<()> {
        Ok(self.stream.write_all(message)?)
    }

    fn receive(&mut self) -> anyhow::Result<Vec<u8>> {
        let mut header = [0u8; wire::HEADER_LEN];
        self.stream.read_exact(&mut header)?;
        let length = wire::Header::parse(&header)
            .map(|h| h.length)
            .ok_or_else(|| anyhow::anyhow!("no header"))?;
        anyhow::ensure!(length >= wire::HEADER_LEN, "length {length}");
        let mut message = header.to_vec();
        message.resize(length, 0);
        self.stream.read_exact(&mut message[wire::HEADER_LEN..])?;
        if message[1] == wire::OFPT_ERROR {
            anyhow::bail!(
                "switch error {:?}: {}",
                wire::error_type_code(&message),
                ofctl(&["ofp-print", &hex(&message)]).unwrap_or_default()
            );
        }
        Ok(message)
    }

    /// Sends a bundle and waits for its commit reply.
    fn install(&mut self, flows: &[flows::Flow]) -> anyhow::Result<()> {
        let messages = switch::native::install_bundle(flows, COOKIE, 1, || {
            self.xid += 1;
            self.xid
        })?;
        let commit_xid = wire::Header::parse(messages.last().map(Vec::as_slice).unwrap_or(&[]))
            .map(|h| h.xid)
            .unwrap_or_default();
        for message in &messages {
            self.send(message)?;
        }
        loop {
            let reply = self.receive()?;
            if reply[1] == wire::OFPT_BUNDLE_CONTROL
                && wire::Header::parse(&reply).map(|h| h.xid) == Some(commit_xid)
            {
                return Ok(());
            }
        }
    }

    fn our_flows(&mut self) -> anyhow::Result<Vec<wire::FlowStats>> {
        self.flows(COOKIE, u64::MAX)
    }

    fn flows(&mut self, cookie: u64, mask: u64) -> anyhow::Result<Vec<wire::FlowStats>> {
        let xid = self.next_xid();
        self.send(&wire::flow_stats_request(xid, cookie, mask))?;
        let mut entries = Vec::new();
        loop {
            let reply = self.receive()?;
            let Some((kind, flags, body)) = wire::multipart_reply(&reply) else {
                anyhow::bail!("not a multipart reply")
            };
            anyhow::ensure!(kind == wire::OFPMP_FLOW, "multipart type {kind}");
            entries.extend(
                wire::parse_flow_stats(body)
                    .ok_or_else(|| anyhow::anyhow!("malformed flow stats"))?,
            );
            if flags & wire::OFPMPF_REPLY_MORE == 0 {
                return Ok(entries);
            }
        }
    }
}

#[test]
#[ignore = "privileged: needs root, network namespaces and Open vSwitch; run as root with --include-ignored (CI does)"]
fn a_bundle_over_the_management_socket_installs_what_ovs_ofctl_would() -> anyhow::Result<()> {
    netns::require_privileges()?;
    ovs::require()?;
    let sw = Switch::start("ofp")?;
    let ovs = &sw.ovs;
    let socket = ovs.openflow("breth0");
    let socket = socket.trim_start_matches("unix:");
    let mut connection = Connection::open(socket)?;
    let flows = planned(false);
    // Someone else's flow: never read back as ours, never deleted.
    ovs.ofctl(
        "add-flow",
        "breth0",
        &["cookie=0xdeff105,table=0,priority=5,arp,actions=NORMAL"],
    )?;

    let started = Instant::now();
    connection.install(&flows)?;
    let read_back = connection.our_flows()?;
    let native = started.elapsed();

    // What OVS shows is the golden dump of the ovs-ofctl path.
    let mut dumped: Vec<String> = ovs
        .ofctl(
            "dump-flows",
            "breth0",
            &["--no-stats", &format!("cookie={COOKIE:#x}/-1")],
        )?
        .lines()
        .filter(|l| l.starts_with(' '))
        .map(|l| l.trim().to_string())
        .collect();
    dumped.sort();
    noverlay_test_support::assert_golden(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("golden"),
        "ovs_flows_ipv4.txt",
        &(dumped.join("\n") + "\n"),
    );
    let theirs = ovs.ofctl("dump-flows", "breth0", &["cookie=0xdeff105/-1"])?;
    assert!(theirs.contains("priority=5,arp actions=NORMAL"), "{theirs}");

    // Read back: one entry per flow, each matching what we encoded, byte for byte.
    assert_eq!(read_back.len(), flows.len());
    for flow in &flows {
        let spec = FlowSpec::parse(
            COOKIE,
            flow.table,
            flow.priority,
            &flow.matches,
            &flow.actions,
        )?;
        let encoded = wire::flow_add(0, &spec, 0);
        let (fields, instructions) = wire::flow_mod_match_and_instructions(&encoded)
            .ok_or_else(|| anyhow::anyhow!("our own flow mod does not parse"))?;
        let found = read_back.iter().find(|s| {
            s.table == flow.table && s.priority == flow.priority && s.match_fields == fields
        });
        let Some(found) = found else {
            anyhow::bail!(
                "{} not read back with our match encoding; read: {read_back:#?}",
                flow.render(COOKIE)
            );
        };
        assert_eq!(found.cookie, COOKIE);
        assert_eq!(
            found.instructions,
            instructions,
            "instructions of {} come back otherwise",
            flow.render(COOKIE)
        );
    }

    // The same install by one ovs-ofctl --bundle process, side by side.
    let bundle = flows::render_bundle(&flows, COOKIE);
    let file = ovs.dir.path().join("bundle.txt");
    std::fs::write(&file, &bundle)?;
    let started = Instant::now();
    let _ = Command::new("ovs-ofctl")
        .args(["-O", "OpenFlow14", "--bundle", "add-flows"])
        .arg(ovs.openflow("breth0"))
        .arg(&file)
        .output()?;
    let ofctl_took = started.elapsed();
    println!(
        "install + read-back of {} flows over an open connection: {native:?}; one `ovs-ofctl --bundle add-flows` (no read-back): {ofctl_took:?}",
        flows.len()
    );
    Ok(())
}

/// The bridge dumped natively and decoded reads, for the coexistence rules,
/// as ovs-ofctl's dump does: next to OVN-Kubernetes' real flow set, the
/// same planned flows are installed, provided by it, or in conflict with
/// it, in every base-pipeline mode.
#[test]
#[ignore = "privileged: needs root, network namespaces and Open vSwitch; run as root with --include-ignored (CI does)"]
fn a_native_dump_places_our_flows_as_ovs_ofctls_does() -> anyhow::Result<()> {
    use dpu_agent::coexist;
    use noverlay_openflow::decode;
    netns::require_privileges()?;
    ovs::require()?;
    let sw = Switch::start("ofq")?;
    let ovs = &sw.ovs;
    ovs.ovnkube_replace_flows("198.18.0.10")?;
    let socket = ovs.openflow("breth0");
    let mut connection = Connection::open(socket.trim_start_matches("unix:"))?;
    let native: Vec<coexist::ForeignFlow> = connection
        .flows(0, 0)?
        .iter()
        .filter_map(|f| coexist::ForeignFlow::parse(&decode::dump_line(f)))
        .collect();
    // As the agent reads ovs-ofctl: the indented lines, trimmed.
    let dumped: Vec<coexist::ForeignFlow> = ovs
        .ofctl("dump-flows", "breth0", &[])?
        .lines()
        .filter(|l| l.starts_with(' '))
        .filter_map(|l| coexist::ForeignFlow::parse(l.trim()))
        .collect();
    assert_eq!(native.len(), dumped.len());
    assert!(native.len() > 25, "ovnkube's flows not loaded");
    let shared = |s: &[coexist::Shared]| s.iter().map(|s| s.ours.clone()).collect::<Vec<_>>();
    for mode in [BasePipeline::Auto, BasePipeline::On, BasePipeline::Off] {
        let plan = flows::plan_flows(
            &offer(false),
            &PortMap {
                host_representor: 1,
                patch: 2,
                uplink: 3,
                bridge_mac: [0x02, 0, 0xc6, 0x12, 0, 0x0a],
            },
            &FlowSettings {
                cookie: COOKIE,
                base_pipeline: mode,
                ct_zone: flows::DEFAULT_CT_ZONE,
            },
        );
        let by_native = coexist::place(&plan, &native, mode, COOKIE);
        let by_ofctl = coexist::place(&plan, &dumped, mode, COOKIE);
        assert_eq!(by_native.install, by_ofctl.install, "{mode:?}");
        assert_eq!(
            shared(&by_native.provided),
            shared(&by_ofctl.provided),
            "{mode:?}"
        );
        assert_eq!(
            shared(&by_native.conflicts),
            shared(&by_ofctl.conflicts),
            "{mode:?}"
        );
        println!(
            "{mode:?}: {} to install, {} provided by ovnkube, {} in conflict",
            by_native.install.len(),
            by_native.provided.len(),
            by_native.conflicts.len()
        );
    }
    Ok(())
}

/// The native switch over TCP (a `ptcp:` listener of ovs-vswitchd, as a
/// `tcp:IP:PORT` target names it): the plan installed in one bundle and read
/// back, our flows as ovs-ofctl dumps them, everyone else's untouched.
#[test]
#[ignore = "privileged: needs root, network namespaces and Open vSwitch; run as root with --include-ignored (CI does)"]
fn the_native_switch_speaks_tcp_too() -> anyhow::Result<()> {
    use dpu_agent::switch::{FlowSwitch, NativeSwitch};
    netns::require_privileges()?;
    ovs::require()?;
    let sw = Switch::start("oft")?;
    let ovs = &sw.ovs;
    ovs.vsctl(&["set-controller", "breth0", "ptcp:16653:127.0.0.1"])?;
    let others_before = ovs.flows_not_of("breth0", COOKIE)?;
    let flows = planned(true);
    let expected = flows.len();
    let endpoint = Endpoint::from_target("tcp:127.0.0.1:16653")
        .ok_or_else(|| anyhow::anyhow!("not a native target"))?;
    let read: Vec<dpu_agent::flows::MatchKey> = sw.ns.run(move || async move {
        let switch = NativeSwitch::on(endpoint, "breth0");
        // The listener comes up with the controller setting: retry briefly.
        let mut attempt = 0;
        loop {
            match switch.replace(&flows, COOKIE, &TwinChecks::default()).await {
                Ok(()) => break,
                Err(_) if attempt < 50 => {
                    attempt += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(switch
            .dump()
            .await?
            .iter()
            .filter(|f| f.cookie() == COOKIE)
            .map(|f| f.match_and_packets().0)
            .collect())
    })?;
    assert_eq!(read.len(), expected, "{read:#?}");
    // The same flows as ovs-ofctl lists them (match keys: field order aside).
    let mut dumped: Vec<dpu_agent::flows::MatchKey> = ovs
        .ofctl("dump-flows", "breth0", &["cookie=0x6e6f7672/-1"])?
        .lines()
        .filter(|l| l.starts_with(' '))
        .map(|l| dpu_agent::flows::MatchKey::dumped(l.trim()).0)
        .collect();
    dumped.sort();
    let mut read = read;
    read.sort();
    assert_eq!(read, dumped);
    assert_eq!(ovs.flows_not_of("breth0", COOKIE)?, others_before);
    Ok(())
}

/// A bridge limited to OpenFlow 1.3 (`protocols=OpenFlow13`, as hardened
/// nodes have it): the native switch negotiates 1.3 and installs in one
/// bundle (the ONF extension), reads back, and its flow monitor hears a
/// wipe. A bridge that allows none of our versions gets one error naming
/// the bridge, what it allows and the fix.
#[test]
#[ignore = "privileged: needs root, network namespaces and Open vSwitch; run as root with --include-ignored (CI does)"]
fn the_native_switch_on_an_openflow_13_only_bridge() -> anyhow::Result<()> {
    use dpu_agent::switch::{FlowSwitch, NativeSwitch};
    netns::require_privileges()?;
    ovs::require()?;
    let sw = Switch::start("of13")?;
    let ovs = &sw.ovs;
    ovs.vsctl(&["set", "bridge", "breth0", "protocols=OpenFlow13"])?;
    let others_before = ovs.flows_not_of("breth0", COOKIE)?;
    let flows = planned(true);
    let expected = flows.len();
    let target = ovs.openflow("breth0");
    let endpoint = Endpoint::from_target(&target).ok_or_else(|| anyhow::anyhow!("{target}"))?;
    let (version, read, woken) = sw.ns.run(move || async move {
        let switch = NativeSwitch::on(endpoint, "breth0");
        let mut changes = switch.watch();
        switch
            .replace(&flows, COOKIE, &TwinChecks::default())
            .await?;
        let version = switch.version().await?;
        let read = switch
            .dump()
            .await?
            .iter()
            .filter(|f| f.cookie() == COOKIE)
            .count();
        while changes.try_recv().is_ok() {}
        // Another connection wipes our flows, as ovnkube's replace-flows does.
        let wiped = Command::new("ovs-ofctl")
            .args([
                "-O",
                "OpenFlow13",
                "del-flows",
                &target,
                "cookie=0x6e6f7672/-1",
            ])
            .status()?;
        anyhow::ensure!(wiped.success(), "del-flows failed");
        let woken = tokio::time::timeout(Duration::from_secs(5), changes.recv())
            .await
            .is_ok();
        Ok((version, read, woken))
    })?;
    assert_eq!(version, wire::OF13);
    assert_eq!(read, expected);
    assert!(woken, "the 1.3 flow monitor never reported the wipe");
    assert_eq!(ovs.flows_not_of("breth0", COOKIE)?, others_before);

    // A bridge that allows only OpenFlow 1.0: one error, with the fix.
    ovs.vsctl(&["set", "bridge", "breth0", "protocols=OpenFlow10"])?;
    let target = ovs.openflow("breth0");
    let endpoint = Endpoint::from_target(&target).ok_or_else(|| anyhow::anyhow!("{target}"))?;
    let error = sw.ns.run(move || async move {
        let switch = NativeSwitch::on(endpoint, "breth0");
        Ok(
            match switch
                .replace(&planned(false), COOKIE, &TwinChecks::default())
                .await
            {
                Ok(()) => String::new(),
                Err(e) => e.to_string(),
            },
        )
    })?;
    assert_eq!(
        error,
        "OpenFlow bundle failed: bridge breth0 allows OpenFlow10 only (its `protocols` column); dpu-agent speaks OpenFlow13,OpenFlow14: run `ovs-vsctl set bridge breth0 protocols=OpenFlow10,OpenFlow13,OpenFlow14` (or clear the column for Open vSwitch's defaults)"
    );
    assert!(!error.contains("ovs-ofctl"), "{error}");
    Ok(())
}

/// Another controller writes the twin of one of our planned flows after
/// our read of the bridge (here: after our first install; its add replaces
/// ours, which is its right). Our next install must not take it back:
/// its bundle probes for it (OpenFlow 1.4 and 1.3), is refused as a whole, says what
/// it found, and leaves the bridge as it was, with no probe behind. Where
/// the read showed nobody else at our (table, priority), one probe guards
/// the place; where it showed a neighbour there, the flow's own probe
/// does. With that probe turned off (what the programmer does once a fresh
/// read shows no twin), the same install replaces the twin: the probe is
/// what stops it.
#[test]
#[ignore = "privileged: needs root, network namespaces and Open vSwitch; run as root with --include-ignored (CI does)"]
fn a_twin_written_after_our_read_is_never_replaced() -> anyhow::Result<()> {
    use dpu_agent::switch::NativeSwitch;
    netns::require_privileges()?;
    ovs::require()?;
    let sw = Switch::start("twin")?;
    let ovs = &sw.ovs;
    let target = ovs.openflow("breth0");
    for backend in ["native OpenFlow 1.4", "native OpenFlow 1.3"] {
        if backend == "native OpenFlow 1.3" {
            ovs.vsctl(&["set", "bridge", "breth0", "protocols=OpenFlow13"])?;
        }
        let endpoint = Endpoint::from_target(&target).ok_or_else(|| anyhow::anyhow!("{target}"))?;
        let target = target.clone();
        let LateTwin {
            refusals,
            before,
            after_refusals,
            after_unprobed,
        } = sw.ns.run(move || async move {
            late_twin(NativeSwitch::on(endpoint, "breth0"), &target).await
        })?;
        let [place, own] = &refusals;
        assert!(
            place.contains("another controller wrote a flow")
                && place.contains("a new flow at table 0, priority 510, where ours are"),
            "{backend}: {place}"
        );
        assert!(
            own.contains("another controller wrote a flow")
                && own.contains(
                    "ours: cookie=0x6e6f7672,table=0,priority=510,in_port=1,ip,nw_src=169.254.0.2"
                ),
            "{backend}: {own}"
        );
        assert!(
            before
                .iter()
                .any(|f| f.contains("cookie=0x7777") && f.contains("actions=drop")),
            "{backend}: the twin is not on the bridge: {before:#?}"
        );
        for after in &after_refusals {
            assert_eq!(
                after, &before,
                "{backend}: a refused bundle changed the bridge"
            );
        }
        assert!(
            !after_unprobed.iter().any(|f| f.contains("cookie=0x7777")),
            "{backend}: without its probe, the install should have replaced the twin: {after_unprobed:#?}"
        );
        assert!(
            after_unprobed.iter().any(|f| f.contains("cookie=0x8888")),
            "{backend}: the neighbour went: {after_unprobed:#?}"
        );
        assert!(
            !after_unprobed.iter().any(|f| f.contains("metadata=")),
            "{backend}: a probe was left behind: {after_unprobed:#?}"
        );
    }
    Ok(())
}

struct LateTwin {
    /// The refusal where the place was unshared, then shared.
    refusals: [String; 2],
    /// The bridge (no counters) before the installs, after each refusal
    /// and after the unprobed install.
    before: Vec<String>,
    after_refusals: [Vec<String>; 2],
    after_unprobed: Vec<String>,
}

async fn late_twin<S: dpu_agent::switch::FlowSwitch>(
    switch: S,
    target: &str,
) -> anyhow::Result<LateTwin> {
    let flows = planned(false);
    switch
        .replace(&flows, COOKIE, &TwinChecks::default())
        .await?;
    let path = flows
        .iter()
        .find(|f| f.priority == flows::PATH_PRIORITY && f.matches.contains("in_port=1"))
        .ok_or_else(|| anyhow::anyhow!("no host-to-OVN flow planned"))?;
    let twin = format!(
        "cookie=0x7777,table={},priority={},{},actions=drop",
        path.table, path.priority, path.matches
    );
    // A neighbour at the same place that overlaps none of ours.
    let neighbour = format!(
        "cookie=0x8888,table=0,priority={},ip,in_port=9,actions=drop",
        path.priority
    );
    let bridge = || -> anyhow::Result<Vec<String>> {
        let out = Command::new("ovs-ofctl")
            .args(["-O", "OpenFlow13", "dump-flows", "--no-stats", target])
            .output()?;
        anyhow::ensure!(out.status.success(), "dump-flows failed");
        Ok(noverlay_tests::ovs::sorted_flows(&String::from_utf8_lossy(
            &out.stdout,
        )))
    };
    let refusal = |result: Result<(), dpu_agent::switch::SwitchError>| match result {
        Ok(()) => String::from("(installed)"),
        Err(e) => e.to_string(),
    };
    for flow in [&twin, &neighbour] {
        let added = Command::new("ovs-ofctl")
            .args(["-O", "OpenFlow13", "add-flow", target, flow])
            .status()?;
        anyhow::ensure!(added.success(), "add-flow {flow} failed");
    }
    let before = bridge()?;
    // Read before the two were written: nobody at our places.
    let unshared = refusal(switch.replace(&flows, COOKIE, &TwinChecks::default()).await);
    let after_unshared = bridge()?;
    // Read with the neighbour there, before the twin.
    let neighbours: Vec<dpu_agent::coexist::ForeignFlow> = before
        .iter()
        .filter(|f| f.contains("cookie=0x8888"))
        .filter_map(|f| dpu_agent::coexist::ForeignFlow::parse(f))
        .collect();
    anyhow::ensure!(neighbours.len() == 1, "neighbour not read: {before:#?}");
    let mut shared = TwinChecks::default();
    shared.read(&neighbours);
    let own = refusal(switch.replace(&flows, COOKIE, &shared).await);
    let after_own = bridge()?;
    shared.settle(Some(&path.match_key()), &flows);
    switch.replace(&flows, COOKIE, &shared).await?;
    let after_unprobed = bridge()?;
    // Leave the bridge as the next backend expects it: neither ours nor
    // the neighbour.
    switch.replace(&[], COOKIE, &TwinChecks::default()).await?;
    let removed = Command::new("ovs-ofctl")
        .args(["-O", "OpenFlow13", "del-flows", target, "cookie=0x8888/-1"])
        .status()?;
    anyhow::ensure!(removed.success(), "del-flows of the neighbour failed");
    Ok(LateTwin {
        refusals: [unshared, own],
        before,
        after_refusals: [after_unshared, after_own],
        after_unprobed,
    })
}
