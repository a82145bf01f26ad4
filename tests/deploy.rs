//! The Kubernetes manifests in deploy/ parse, agree with each other and with the
//! config they carry: what an operator applies must work.

use std::path::{Path, PathBuf};

use celgate_engine::plan::parse_yaml;
use serde_json::Value;

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn manifest(name: &str) -> Value {
    let path = deploy_dir().join(name);
    let text = std::fs::read_to_string(&path).unwrap();
    parse_yaml::<Value>(&text)
        .unwrap_or_else(|e| panic!("{}", e.render(&path.display().to_string())))
}

#[test]
fn every_manifest_parses_and_is_listed() {
    let mut names: Vec<String> = std::fs::read_dir(deploy_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    names.sort();
    assert!(names.len() >= 5, "{names:?}");
    for n in &names {
        let m = manifest(n);
        assert!(
            m["kind"].is_string() && m["apiVersion"].is_string(),
            "{n}: no kind/apiVersion"
        );
    }
    let kustomization = manifest("kustomization.yaml");
    let listed: Vec<&str> = kustomization["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for n in &names {
        if n != "kustomization.yaml" && !n.contains("example") {
            assert!(
                listed.contains(&n.as_str()),
                "{n} is not in kustomization.yaml"
            );
        }
    }
}

#[test]
fn the_configmap_holds_a_valid_config_and_the_deployment_matches_it() {
    let path = deploy_dir().join("configmap.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let loaded = celgate_engine::load_document(&text, &Default::default())
        .unwrap_or_else(|e| panic!("{}", e.render(&path.display().to_string())));
    let file = &loaded.file;

    let deployment = manifest("deployment.yaml");
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let args: Vec<&str> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(args[..2], ["run", "--config"]);
    let config_path = Path::new(args[2]);

    // The ConfigMap is mounted as a directory holding config.yaml, never via subPath.
    let mounts = container["volumeMounts"].as_array().unwrap();
    let config_mount = mounts
        .iter()
        .find(|m| m["name"] == "config")
        .expect("a config mount");
    assert!(
        config_mount.get("subPath").is_none(),
        "subPath mounts never update"
    );
    assert_eq!(
        Path::new(config_mount["mountPath"].as_str().unwrap()),
        config_path.parent().unwrap()
    );
    assert_eq!(config_path.file_name().unwrap(), "config.yaml");
    let volumes = pod["volumes"].as_array().unwrap();
    let config_volume = volumes.iter().find(|v| v["name"] == "config").unwrap();
    assert_eq!(
        config_volume["configMap"]["name"],
        manifest("configmap.yaml")["metadata"]["name"]
    );

    // Ports: the config's listen/admin ports are the container's.
    let port = |name: &str| {
        container["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap()["containerPort"]
            .as_u64()
            .unwrap()
    };
    let port_of = |addr: &str| addr.rsplit_once(':').unwrap().1.parse::<u64>().unwrap();
    assert!(file.listen.is_some() && file.admin.is_some());
    assert_eq!(port_of(file.listen()), port("http"));
    assert_eq!(port_of(file.admin()), port("admin"));
    assert!(
        file.admin().starts_with("0.0.0.0:"),
        "probes come from outside the pod"
    );

    // Probes on the admin endpoints.
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["livenessProbe"]["httpGet"]["port"], "admin");

    // Backend keys come from the mounted Secret; the collector token from the env.
    let secrets_mount = mounts.iter().find(|m| m["name"] == "secrets").unwrap();
    let secret_dir = Path::new(secrets_mount["mountPath"].as_str().unwrap());
    let secret_volume = volumes.iter().find(|v| v["name"] == "secrets").unwrap();
    let items: Vec<&str> = secret_volume["secret"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["path"].as_str().unwrap())
        .collect();
    for b in &file.backends {
        match &b.value.api_key {
            Some(celgate_engine::config::SecretRef::File(p)) => {
                let p = Path::new(p);
                assert_eq!(p.parent().unwrap(), secret_dir, "{p:?}");
                assert!(
                    items.contains(&p.file_name().unwrap().to_str().unwrap()),
                    "{p:?}"
                );
            }
            other => panic!(
                "backend {} should read its key from the Secret, not {other:?}",
                b.value.name
            ),
        }
    }
    let env_names: Vec<&str> = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    for (_, value) in &loaded.plan.headers {
        if let Some(var) = value.split("${").nth(1).and_then(|r| r.split('}').next()) {
            assert!(
                env_names.contains(&var),
                "header needs ${{{var}}} but the Deployment does not set it"
            );
        }
    }

    // Grace period longer than the drain deadline.
    let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
    let drain = file.server.shutdown_timeout.map_or(30, |d| d.0.as_secs());
    assert!(
        grace > drain,
        "grace {grace}s must exceed shutdownTimeout {drain}s"
    );

    // The Service targets the http port of these pods.
    let service = manifest("service.yaml");
    assert_eq!(service["spec"]["ports"][0]["targetPort"], "http");
    assert_eq!(
        service["spec"]["selector"],
        deployment["spec"]["selector"]["matchLabels"]
    );
}
