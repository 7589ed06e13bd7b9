//! `palisade audit`: the DBA's report on isolation, read from the catalog. Findings come
//! from the `app.isolation_report` view (policies/audit.sql, the same checks a DBA runs in
//! psql) plus the role timeouts the server expects ([`super::Lane::timeouts`]); the
//! inventory shows, per table, RLS, policies and grants, per function, definer, owner,
//! search_path and who may execute it, and per runtime role its attributes, groups and
//! settings.

use std::fmt::{self, Write as _};

use serde::Serialize;
use tokio_postgres::Client;

use super::Lane;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Finding {
    pub check: String,
    pub object: String,
    pub detail: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} -- {}", self.check, self.object, self.detail)
    }
}

#[derive(Debug, Serialize)]
pub struct Policy {
    pub name: String,
    /// `permissive` or `restrictive`.
    pub kind: String,
    /// `all`, `select`, `insert`, `update` or `delete`.
    pub command: String,
    pub roles: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Grant {
    pub role: String,
    pub privilege: String,
    /// Empty: the whole table.
    pub columns: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct TableReport {
    pub table: String,
    pub rls_enabled: bool,
    pub rls_forced: bool,
    pub tenant: bool,
    pub policies: Vec<Policy>,
    pub grants: Vec<Grant>,
}

#[derive(Debug, Serialize)]
pub struct FunctionReport {
    pub function: String,
    pub security_definer: bool,
    pub owner: String,
    pub search_path: Option<String>,
    pub executable_by: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct RoleReport {
    pub role: String,
    pub lane: String,
    pub login: bool,
    pub superuser: bool,
    pub bypass_rls: bool,
    pub member_of: Vec<String>,
    pub settings: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub tables: Vec<TableReport>,
    pub functions: Vec<FunctionReport>,
    pub roles: Vec<RoleReport>,
    pub findings: Vec<Finding>,
}

/// Role-level timeouts of `role` (a login role of `lane`) that differ from what the
/// server sets on each connection. The server overrides them per connection; a
/// difference means someone (perhaps SQL running as the role) changed them.
pub async fn timeout_drift(
    client: &Client,
    role: &str,
    lane: Lane,
) -> Result<Vec<Finding>, tokio_postgres::Error> {
    // What a new connection gets, as PostgreSQL applies it: the role's setting in this
    // database (ALTER ROLE ... IN DATABASE) wins over its cluster-wide one.
    let settings: Vec<String> = client
        .query(
            "select c from pg_catalog.pg_db_role_setting s
               join pg_catalog.pg_roles r on r.oid = s.setrole
              cross join lateral pg_catalog.unnest(s.setconfig) c
              where r.rolname = $1 and s.setdatabase in (0, (select oid from pg_catalog.pg_database
                                                            where datname = pg_catalog.current_database()))
              order by s.setdatabase desc",
            &[&role],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut drift = Vec::new();
    for (name, expected) in lane.timeouts().as_role_settings() {
        let actual = settings
            .iter()
            .find_map(|s| s.strip_prefix(&format!("{name}=")))
            .unwrap_or("(unset)");
        if actual != expected {
            drift.push(Finding {
                check: "role_timeout".into(),
                object: role.to_owned(),
                detail: format!(
                    "{name} is {actual}, expected {expected} (deploy/roles.sql); the server sets {expected} on each connection anyway"
                ),
            });
        }
    }
    Ok(drift)
}

/// The whole report. Run it as the schema owner (or a superuser): the view is theirs.
pub async fn report(client: &Client) -> anyhow::Result<Report> {
    let findings_rows = client
        .query(
            "select \"check\", object, detail from app.isolation_report order by 1, 2, 3",
            &[],
        )
        .await?;
    let mut findings: Vec<Finding> = findings_rows
        .iter()
        .map(|r| Finding {
            check: r.get(0),
            object: r.get(1),
            detail: r.get(2),
        })
        .collect();

    let roles = roles(client).await?;
    for role in &roles {
        if let Some(lane) = Lane::ALL.iter().find(|l| l.group_role() == role.lane)
            && role.login
        {
            findings.extend(timeout_drift(client, &role.role, *lane).await?);
        }
    }
    Ok(Report {
        tables: tables(client).await?,
        functions: functions(client).await?,
        roles,
        findings,
    })
}

async fn tables(client: &Client) -> anyhow::Result<Vec<TableReport>> {
    let rows = client
        .query(
            "select c.oid, pg_catalog.format('%I.%I', n.nspname, c.relname), c.relrowsecurity,
                    c.relforcerowsecurity,
                    exists (select 1 from pg_catalog.pg_attribute a
                             where a.attrelid = c.oid and a.attname = 'org_id' and not a.attisdropped)
               from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = c.relnamespace
              where c.relkind in ('r', 'p') and n.nspname not in ('pg_catalog', 'information_schema')
                and (n.nspname = 'app' or exists (select 1 from pg_catalog.pg_attribute a
                      where a.attrelid = c.oid and a.attname = 'org_id' and not a.attisdropped))
              order by 2",
            &[],
        )
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let oid: u32 = row.get(0);
        let policies = client
            .query(
                "select p.polname::text,
                        case when p.polpermissive then 'permissive' else 'restrictive' end,
                        case p.polcmd when 'r' then 'select' when 'a' then 'insert' when 'w' then 'update'
                                      when 'd' then 'delete' else 'all' end,
                        coalesce((select pg_catalog.array_agg(case when r = 0 then 'public' else pg_catalog.pg_get_userbyid(r)::text end order by 1)
                                    from pg_catalog.unnest(p.polroles) r), '{}')
                   from pg_catalog.pg_policy p where p.polrelid = $1 order by 1",
                &[&oid],
            )
            .await?
            .iter()
            .map(|r| Policy {
                name: r.get(0),
                kind: r.get(1),
                command: r.get(2),
                roles: r.get(3),
            })
            .collect();
        let grants = client
            .query(
                "select grantee, privilege, coalesce(pg_catalog.array_agg(col order by col) filter (where col is not null), '{}')
                   from (
                     select case when a.grantee = 0 then 'public' else pg_catalog.pg_get_userbyid(a.grantee)::text end as grantee,
                            a.privilege_type::text as privilege, null::text as col
                       from pg_catalog.pg_class c, pg_catalog.aclexplode(c.relacl) a
                      where c.oid = $1 and a.grantee <> c.relowner
                     union all
                     select case when a.grantee = 0 then 'public' else pg_catalog.pg_get_userbyid(a.grantee)::text end,
                            a.privilege_type::text, at.attname::text
                       from pg_catalog.pg_attribute at, pg_catalog.aclexplode(at.attacl) a
                      where at.attrelid = $1 and at.attacl is not null
                   ) g
                  group by 1, 2 order by 1, 2",
                &[&oid],
            )
            .await?
            .iter()
            .map(|r| Grant {
                role: r.get(0),
                privilege: r.get(1),
                columns: r.get(2),
            })
            .collect();
        out.push(TableReport {
            table: row.get(1),
            rls_enabled: row.get(2),
            rls_forced: row.get(3),
            tenant: row.get(4),
            policies,
            grants,
        });
    }
    Ok(out)
}

async fn functions(client: &Client) -> anyhow::Result<Vec<FunctionReport>> {
    Ok(client
        .query(
            "select p.oid::regprocedure::text, p.prosecdef, pg_catalog.pg_get_userbyid(p.proowner)::text,
                    (select pg_catalog.substr(c, 13) from pg_catalog.unnest(p.proconfig) c where c like 'search_path=%'),
                    coalesce((select pg_catalog.array_agg(case when a.grantee = 0 then 'public'
                                                               else pg_catalog.pg_get_userbyid(a.grantee)::text end order by 1)
                                from pg_catalog.aclexplode(coalesce(p.proacl, pg_catalog.acldefault('f', p.proowner))) a
                               where a.privilege_type = 'EXECUTE' and a.grantee <> p.proowner), '{}')
               from pg_catalog.pg_proc p where p.pronamespace = 'app'::regnamespace order by 1",
            &[],
        )
        .await?
        .iter()
        .map(|r| FunctionReport {
            function: r.get(0),
            security_definer: r.get(1),
            owner: r.get(2),
            search_path: r.get(3),
            executable_by: r.get(4),
        })
        .collect())
}

async fn roles(client: &Client) -> anyhow::Result<Vec<RoleReport>> {
    let groups: Vec<String> = Lane::ALL
        .iter()
        .map(|l| l.group_role().to_owned())
        .collect();
    Ok(client
        .query(
            "select r.rolname::text, g.rolname::text, r.rolcanlogin, r.rolsuper, r.rolbypassrls,
                    coalesce((select pg_catalog.array_agg(pg_catalog.pg_get_userbyid(m2.roleid)::text order by 1)
                                from pg_catalog.pg_auth_members m2 where m2.member = r.oid), '{}'),
                    coalesce((select pg_catalog.array_agg(
                                         case when s.setdatabase = 0 then c else c || ' (this database)' end
                                         order by s.setdatabase, c)
                                from pg_catalog.pg_db_role_setting s, pg_catalog.unnest(s.setconfig) c
                               where s.setrole = r.oid
                                 and s.setdatabase in (0, (select oid from pg_catalog.pg_database
                                                          where datname = pg_catalog.current_database()))), '{}')
               from pg_catalog.pg_roles g
               join pg_catalog.pg_auth_members m on m.roleid = g.oid
               join pg_catalog.pg_roles r on r.oid = m.member
              where g.rolname = any($1)
              order by 2, 1",
            &[&groups],
        )
        .await?
        .iter()
        .map(|r| RoleReport {
            role: r.get(0),
            lane: r.get(1),
            login: r.get(2),
            superuser: r.get(3),
            bypass_rls: r.get(4),
            member_of: r.get(5),
            settings: r.get(6),
        })
        .collect())
}

impl Report {
    /// The human-readable form `palisade audit` prints.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let yes = |b: bool| if b { "yes" } else { "NO" };
        let _ = writeln!(out, "== tables ({})", self.tables.len());
        for t in &self.tables {
            let _ = writeln!(
                out,
                "{}{}  rls enabled: {}, forced: {}",
                t.table,
                if t.tenant { " (tenant)" } else { "" },
                yes(t.rls_enabled),
                yes(t.rls_forced)
            );
            for p in &t.policies {
                let _ = writeln!(
                    out,
                    "    policy {} {} for {} to {}",
                    p.name,
                    p.kind,
                    p.command,
                    p.roles.join(", ")
                );
            }
            for g in &t.grants {
                let cols = if g.columns.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", g.columns.join(", "))
                };
                let _ = writeln!(out, "    grant {}{} to {}", g.privilege, cols, g.role);
            }
        }
        let _ = writeln!(out, "\n== functions ({})", self.functions.len());
        for f in &self.functions {
            let _ = writeln!(
                out,
                "{}  {}, owner {}, search_path {}, executable by {}",
                f.function,
                if f.security_definer {
                    "SECURITY DEFINER"
                } else {
                    "invoker"
                },
                f.owner,
                f.search_path.as_deref().unwrap_or("(not pinned)"),
                if f.executable_by.is_empty() {
                    "the owner only".to_owned()
                } else {
                    f.executable_by.join(", ")
                }
            );
        }
        let _ = writeln!(out, "\n== runtime roles ({})", self.roles.len());
        for r in &self.roles {
            let _ = writeln!(
                out,
                "{} in {}: login {}, superuser {}, bypassrls {}, member of {}, settings {}",
                r.role,
                r.lane,
                r.login,
                r.superuser,
                r.bypass_rls,
                r.member_of.join(", "),
                if r.settings.is_empty() {
                    "(none)".to_owned()
                } else {
                    r.settings.join(" ")
                }
            );
        }
        let _ = writeln!(out, "\n== findings ({})", self.findings.len());
        for f in &self.findings {
            let _ = writeln!(out, "FINDING {f}");
        }
        if self.findings.is_empty() {
            let _ = writeln!(out, "none: isolation holds as policies/ describes it");
        }
        out
    }
}
