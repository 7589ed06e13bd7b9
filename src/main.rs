use std::process::ExitCode;

use palisade::{config::Settings, startup, telemetry};

/// mimalloc instead of glibc malloc: a request allocates in many small pieces across
/// worker threads, where glibc's arenas cost ~15% of the server's CPU under load
/// (benches/README-performance.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str = "usage: palisade [serve|migrate|audit [--format json]|orgs set-plan <org_id> <plan>|storage reconcile [--apply] [--grace-seconds N]|audit-log verify|openapi]\n\
  serve    run the API server (default)\n\
  migrate  apply migrations and policies, then exit\n\
  audit    print the isolation report (RLS, policies, grants, definer functions, roles);\n\
           exit status 1 on any finding\n\
  orgs set-plan <org_id> <plan>\n\
           move an organization to a plan (free, pro, enterprise, or one a DBA added)\n\
  storage reconcile [--apply] [--grace-seconds N]\n\
           report objects no committed row names (older than N s, default 900);\n\
           --apply deletes them\n\
  audit-log verify\n\
           check every audit chain, and the chain heads stored each day in the object\n\
           store; exit status 1 on any broken link\n\
  openapi  print the OpenAPI document (needs no database)";

fn main() -> ExitCode {
    let command = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "serve".to_owned());
    if command == "openapi" {
        println!("{}", palisade::api::openapi_json());
        return ExitCode::SUCCESS;
    }
    let args: Vec<String> = std::env::args().skip(2).collect();
    let mut set_plan = None;
    let mut reconcile = None;
    let json = match (command.as_str(), args.as_slice()) {
        ("serve" | "migrate", []) | ("audit", []) => false,
        ("audit-log", [sub]) if sub == "verify" => false,
        ("orgs", [sub, org, plan]) if sub == "set-plan" => match org.parse::<uuid::Uuid>() {
            Ok(org) => {
                set_plan = Some((org, plan.clone()));
                false
            }
            Err(_) => {
                eprintln!("palisade orgs set-plan: {org:?} is not an organization id (a UUID)");
                return ExitCode::from(2);
            }
        },
        ("storage", [sub, rest @ ..]) if sub == "reconcile" => {
            let (mut apply, mut grace) = (false, 900u64);
            let mut it = rest.iter();
            while let Some(arg) = it.next() {
                match (arg.as_str(), it.clone().next()) {
                    ("--apply", _) => apply = true,
                    ("--grace-seconds", Some(n)) if n.parse::<u64>().is_ok() => {
                        grace = n.parse().expect("checked");
                        it.next();
                    }
                    _ => {
                        eprintln!("{USAGE}");
                        return ExitCode::from(2);
                    }
                }
            }
            reconcile = Some((apply, std::time::Duration::from_secs(grace)));
            false
        }
        ("audit", [flag, format])
            if flag == "--format" && (format == "json" || format == "text") =>
        {
            format == "json"
        }
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let _log_writer = telemetry::init();
    let result = Settings::from_env().and_then(|settings| {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(async move {
                match command.as_str() {
                    "migrate" => startup::migrate_only(settings).await.map(|()| true),
                    "audit" => startup::audit_only(settings, json).await,
                    "audit-log" => startup::audit_log_verify(settings).await,
                    "storage" => {
                        let (apply, grace) = reconcile.expect("parsed above");
                        startup::storage_reconcile(settings, apply, grace)
                            .await
                            .map(|()| true)
                    }
                    "orgs" => {
                        let (org, plan) = set_plan.expect("parsed above");
                        startup::set_org_plan(settings, org, &plan)
                            .await
                            .map(|()| true)
                    }
                    _ => startup::serve(settings).await.map(|()| true),
                }
            })
    });
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            tracing::error!("{err:#}");
            eprintln!("palisade: {err:#}");
            ExitCode::FAILURE
        }
    }
}
