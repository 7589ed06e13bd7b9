//! The command line: parsing, the usage text, and running a command. `main.rs` hands it
//! the arguments. Exit status: 0 success, 1 failure (a target not found, an operation
//! refused, a finding), 2 a usage error.

use std::{process::ExitCode, time::Duration};

use uuid::Uuid;

use crate::{
    config::Settings,
    operator::{self, Format, Op, Retry, UserRef},
    startup, telemetry,
};

pub const USAGE: &str = "\
usage: palisade [COMMAND] [--format json|text]      (palisade help: this text)

server and schema:
  serve                   run the API server (default)
  migrate                 apply migrations and policies, then exit
  audit                   print the isolation report (RLS, policies, grants, definer functions,
                          roles); exit status 1 on any finding
  audit-log verify        check every audit chain, and the chain heads stored each day in the
                          object store; exit status 1 on any broken link
  storage reconcile [--apply] [--grace-seconds N]
                          report objects no committed row names (older than N s, default 900);
                          --apply deletes them
  openapi                 print the OpenAPI document (needs no database)

operator (as the schema owner: the embedded cluster, or DATABASE_OWNER_URL; never over HTTP):
  users list [--email-contains S] [--limit N]
                          accounts, oldest first (default limit 50)
  users show <id|email>   an account: verified?, disabled?, its orgs and roles, live sessions,
                          the API keys it created
  users disable <id|email>
                          no sign-in (403 account_disabled), every session revoked, its API keys
                          refused until it is enabled again
  users enable <id|email> undo `users disable`
  users reset-password <id|email> [--revoke-sessions]
                          email a password-reset link (the forgot-password email, sent by the
                          worker); --revoke-sessions also signs the account out everywhere
  orgs list [--limit N]   organizations with plan and member count, oldest first (default 50)
  orgs show <org_id>      an organization: plan and status, members by role, projects
  orgs set-plan <org_id> <plan>
                          move an organization to a plan (free, pro, enterprise, or one a DBA
                          added)
  sessions revoke --user <id|email>
                          sign an account out everywhere (sessions and refresh tokens)
  outbox status           emails by state, oldest pending age, failures with their last error
  outbox retry --id ID | --all-failed
                          make failed emails due again
  keys status             data keys per master key id; orgs with secrets on retired data keys
  keys rotate-master      rewrap every data key under PALISADE_MASTER_KEY (the old key in
                          PALISADE_MASTER_KEY_PREVIOUS); secrets are not touched
  keys rotate-org <org_id>
                          a new data key version for the org; its secrets sealed again under it,
                          older versions retired (one transaction)

--format json prints one JSON document on stdout (default: text). Exit status: 0 success,
1 not found / refused / failed, 2 usage error.";

/// A parsed command line.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    Serve,
    Migrate,
    Audit {
        json: bool,
    },
    AuditLogVerify,
    StorageReconcile {
        apply: bool,
        grace: Duration,
    },
    OpenApi,
    /// `help`, `--help`, `-h`: the usage text on stdout.
    Help,
    Operator(Op, Format),
}

/// Options that take a value; every other `--option` is a switch.
const VALUED: &[&str] = &[
    "format",
    "limit",
    "email-contains",
    "user",
    "id",
    "grace-seconds",
];

/// The arguments after the command words: positionals, and options (`--name value`,
/// `--name=value` or a switch `--name`) each allowed at most once.
struct Args {
    positional: Vec<String>,
    options: Vec<(String, Option<String>)>,
}

impl Args {
    fn parse(args: &[String]) -> Result<Self, String> {
        let mut parsed = Args {
            positional: Vec::new(),
            options: Vec::new(),
        };
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let Some(option) = arg.strip_prefix("--") else {
                parsed.positional.push(arg.clone());
                continue;
            };
            let (name, value) = match option.split_once('=') {
                Some((name, value)) => (name.to_owned(), Some(value.to_owned())),
                None if VALUED.contains(&option) => match it.next() {
                    Some(value) => (option.to_owned(), Some(value.clone())),
                    None => return Err(format!("--{option} needs a value")),
                },
                None => (option.to_owned(), None),
            };
            if VALUED.contains(&name.as_str()) != value.is_some() {
                return Err(format!("--{name}: unexpected value"));
            }
            if parsed.options.iter().any(|(n, _)| *n == name) {
                return Err(format!("--{name} given twice"));
            }
            parsed.options.push((name, value));
        }
        Ok(parsed)
    }

    fn value(&mut self, name: &str) -> Option<String> {
        let at = self.options.iter().position(|(n, _)| n == name)?;
        self.options.remove(at).1
    }

    fn switch(&mut self, name: &str) -> bool {
        match self.options.iter().position(|(n, _)| n == name) {
            Some(at) => {
                self.options.remove(at);
                true
            }
            None => false,
        }
    }

    fn number(&mut self, name: &str, default: i64, min: i64, max: i64) -> Result<i64, String> {
        match self.value(name) {
            None => Ok(default),
            Some(v) => match v.parse::<i64>() {
                Ok(n) if (min..=max).contains(&n) => Ok(n),
                _ => Err(format!("--{name} must be a number from {min} to {max}")),
            },
        }
    }

    fn format(&mut self) -> Result<Format, String> {
        match self.value("format").as_deref() {
            None | Some("text") => Ok(Format::Text),
            Some("json") => Ok(Format::Json),
            Some(other) => Err(format!("--format {other}: expected json or text")),
        }
    }

    /// The positionals, which must be exactly `N`, once every option was taken.
    fn finish<const N: usize>(self) -> Result<[String; N], String> {
        if let Some((name, _)) = self.options.first() {
            return Err(format!("unknown option --{name}"));
        }
        let count = self.positional.len();
        self.positional
            .try_into()
            .map_err(|_| format!("expected {N} argument(s), got {count}"))
    }
}

fn user_ref(s: &str) -> Result<UserRef, String> {
    if s.contains('@') {
        Ok(UserRef::Email(s.trim().to_lowercase()))
    } else {
        s.parse::<Uuid>()
            .map(UserRef::Id)
            .map_err(|_| format!("{s:?} is neither a user id (a UUID) nor an email"))
    }
}

fn org_id(s: &str) -> Result<Uuid, String> {
    s.parse::<Uuid>()
        .map_err(|_| format!("{s:?} is not an organization id (a UUID)"))
}

/// Parses the arguments after the program name. `Err`: what is wrong, for a usage error.
pub fn parse(argv: &[String]) -> Result<Command, String> {
    if matches!(argv, [one] if ["help", "--help", "-h"].contains(&one.as_str())) {
        return Ok(Command::Help);
    }
    let words: Vec<&str> = argv.iter().take(2).map(String::as_str).collect();
    let (command, rest) = match words.as_slice() {
        [] => return Ok(Command::Serve),
        [
            "users" | "orgs" | "sessions" | "outbox" | "audit-log" | "storage" | "keys",
            sub,
            ..,
        ] if !sub.starts_with("--") => ((words[0], *sub), &argv[2..]),
        [first, ..] => ((*first, ""), &argv[1..]),
    };
    let mut args = Args::parse(rest)?;
    let operator = |op: Op, args: &mut Args| -> Result<Command, String> {
        Ok(Command::Operator(op, args.format()?))
    };
    let command = match command {
        ("serve", "") => {
            args.finish::<0>()?;
            Command::Serve
        }
        ("migrate", "") => {
            args.finish::<0>()?;
            Command::Migrate
        }
        ("openapi", "") => {
            args.finish::<0>()?;
            Command::OpenApi
        }
        ("audit", "") => {
            let json = args.format()? == Format::Json;
            args.finish::<0>()?;
            Command::Audit { json }
        }
        ("audit-log", "verify") => {
            args.finish::<0>()?;
            Command::AuditLogVerify
        }
        ("storage", "reconcile") => {
            let apply = args.switch("apply");
            let grace = Duration::from_secs(
                args.number("grace-seconds", 900, 0, i64::MAX)?
                    .unsigned_abs(),
            );
            args.finish::<0>()?;
            Command::StorageReconcile { apply, grace }
        }
        ("users", "list") => {
            let op = Op::UsersList {
                email_contains: args.value("email-contains"),
                limit: args.number("limit", 50, 1, 10_000)?,
            };
            let command = operator(op, &mut args)?;
            args.finish::<0>()?;
            command
        }
        ("users", sub @ ("show" | "disable" | "enable" | "reset-password")) => {
            let revoke_sessions = sub == "reset-password" && args.switch("revoke-sessions");
            let format = args.format()?;
            let [user] = args.finish::<1>()?;
            let user = user_ref(&user)?;
            let op = match sub {
                "show" => Op::UsersShow(user),
                "disable" => Op::UsersDisable(user),
                "enable" => Op::UsersEnable(user),
                _ => Op::UsersResetPassword {
                    user,
                    revoke_sessions,
                },
            };
            Command::Operator(op, format)
        }
        ("orgs", "list") => {
            let op = Op::OrgsList {
                limit: args.number("limit", 50, 1, 10_000)?,
            };
            let command = operator(op, &mut args)?;
            args.finish::<0>()?;
            command
        }
        ("orgs", "show") => {
            let format = args.format()?;
            let [org] = args.finish::<1>()?;
            Command::Operator(Op::OrgsShow(org_id(&org)?), format)
        }
        ("orgs", "set-plan") => {
            let format = args.format()?;
            let [org, plan] = args.finish::<2>()?;
            Command::Operator(
                Op::OrgsSetPlan {
                    org: org_id(&org)?,
                    plan,
                },
                format,
            )
        }
        ("sessions", "revoke") => {
            let user = args
                .value("user")
                .ok_or("sessions revoke needs --user <id|email>")?;
            let op = Op::SessionsRevoke(user_ref(&user)?);
            let command = operator(op, &mut args)?;
            args.finish::<0>()?;
            command
        }
        ("outbox", "status") => {
            let command = operator(Op::OutboxStatus, &mut args)?;
            args.finish::<0>()?;
            command
        }
        ("outbox", "retry") => {
            let retry = match (args.value("id"), args.switch("all-failed")) {
                (Some(id), false) => Retry::One(
                    id.parse()
                        .map_err(|_| format!("--id {id:?} is not an email id (a UUID)"))?,
                ),
                (None, true) => Retry::AllFailed,
                _ => {
                    return Err("outbox retry needs exactly one of --id ID and --all-failed".into());
                }
            };
            let command = operator(Op::OutboxRetry(retry), &mut args)?;
            args.finish::<0>()?;
            command
        }
        ("keys", "status") => {
            let command = operator(Op::KeysStatus, &mut args)?;
            args.finish::<0>()?;
            command
        }
        ("keys", "rotate-master") => {
            let command = operator(Op::KeysRotateMaster, &mut args)?;
            args.finish::<0>()?;
            command
        }
        ("keys", "rotate-org") => {
            let format = args.format()?;
            let [org] = args.finish::<1>()?;
            Command::Operator(Op::KeysRotateOrg(org_id(&org)?), format)
        }
        (word, "") => return Err(format!("unknown command {word:?}")),
        (word, sub) => return Err(format!("unknown command {word:?} {sub:?}")),
    };
    Ok(command)
}

/// Parses and runs a command line; what `main` returns.
pub fn run(argv: &[String]) -> ExitCode {
    let command = match parse(argv) {
        Ok(command) => command,
        Err(problem) => {
            eprintln!("palisade: {problem}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match command {
        Command::OpenApi => {
            println!("{}", crate::api::openapi_json());
            return ExitCode::SUCCESS;
        }
        Command::Help => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        _ => {}
    }
    let _log_writer = telemetry::init();
    let result = Settings::from_env().and_then(|settings| {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(async move {
                match command {
                    Command::Serve | Command::OpenApi | Command::Help => {
                        startup::serve(settings).await.map(|()| true)
                    }
                    Command::Migrate => startup::migrate_only(settings).await.map(|()| true),
                    Command::Audit { json } => startup::audit_only(settings, json).await,
                    Command::AuditLogVerify => startup::audit_log_verify(settings).await,
                    Command::StorageReconcile { apply, grace } => {
                        startup::storage_reconcile(settings, apply, grace)
                            .await
                            .map(|()| true)
                    }
                    Command::Operator(op, format) => operator::run(&settings, op, format).await,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(line: &str) -> Result<Command, String> {
        let argv: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
        parse(&argv)
    }

    #[test]
    fn keys_commands_parse() {
        let org = Uuid::new_v4();
        assert_eq!(
            parse_str(&format!("keys rotate-org {org} --format json")),
            Ok(Command::Operator(Op::KeysRotateOrg(org), Format::Json))
        );
        assert_eq!(
            parse_str("keys rotate-master"),
            Ok(Command::Operator(Op::KeysRotateMaster, Format::Text))
        );
        assert_eq!(
            parse_str("keys status"),
            Ok(Command::Operator(Op::KeysStatus, Format::Text))
        );
        assert!(parse_str("keys rotate-org not-a-uuid").is_err());
        assert!(parse_str("keys rotate-org").is_err());
        assert!(parse_str("keys rotate-master extra").is_err());
    }

    #[test]
    fn commands_parse_with_their_options() {
        assert_eq!(parse_str(""), Ok(Command::Serve));
        assert_eq!(parse_str("--help"), Ok(Command::Help));
        assert_eq!(
            parse_str("audit --format json"),
            Ok(Command::Audit { json: true })
        );
        assert_eq!(
            parse_str("users list --limit 5 --email-contains=ACME --format json"),
            Ok(Command::Operator(
                Op::UsersList {
                    email_contains: Some("ACME".into()),
                    limit: 5
                },
                Format::Json
            ))
        );
        assert_eq!(
            parse_str("users reset-password Ann@Example.com --revoke-sessions"),
            Ok(Command::Operator(
                Op::UsersResetPassword {
                    user: UserRef::Email("ann@example.com".into()),
                    revoke_sessions: true
                },
                Format::Text
            ))
        );
        assert_eq!(
            parse_str("outbox retry --all-failed"),
            Ok(Command::Operator(
                Op::OutboxRetry(Retry::AllFailed),
                Format::Text
            ))
        );
        assert_eq!(
            parse_str("storage reconcile --apply --grace-seconds 60"),
            Ok(Command::StorageReconcile {
                apply: true,
                grace: Duration::from_secs(60)
            })
        );
    }

    #[test]
    fn usage_errors_are_refused() {
        for line in [
            "frobnicate",
            "users",
            "users show",
            "users show not-an-id",
            "users show a@b.c extra",
            "users list --limit 0",
            "users list --limit x",
            "users list --bogus",
            "users disable a@b.c --revoke-sessions",
            "orgs set-plan not-a-uuid pro",
            "orgs show",
            "sessions revoke",
            "outbox retry",
            "outbox retry --id x",
            "outbox retry --all-failed --id 00000000-0000-0000-0000-000000000000",
            "audit --format yaml",
            "serve now",
            "users list --format",
            "users list --format json --format text",
        ] {
            assert!(parse_str(line).is_err(), "{line:?} parsed");
        }
    }
}
