//! Authorization plugins (moby `pkg/authorization`): every API request that reaches a route
//! passes a chain of AuthZ plugins before its handler runs (`AuthZReq`) and again after it
//! (`AuthZRes`). The API's middleware (`api::authz`) turns HTTP into [`AuthzRequest`]s with the
//! rules of [`request`]; this module owns the chain.
//!
//! * **Order**: the configured order, duplicate names dropped; the first plugin that denies
//!   stops the chain (`authorization denied by plugin <name>: <Msg>`, 403).
//! * **Fail closed**: a plugin that cannot be reached, does not answer within its deadline,
//!   answers garbage or a non-200 status fails the request (`plugin <name> failed with error:
//!   …`, 500); nothing reaches the handler. Calls are not retried, so a dead plugin costs a
//!   request nothing but the refusal.
//! * **Resolution**: every name must resolve, through the plugin getter, to an enabled managed
//!   `docker.authz/1.0` plugin or a legacy plugin implementing `authz`, at start-up and on each
//!   reload; a configuration with one that does not is refused as a whole. Managed plugins
//!   are named `name:tag` in messages.
//! * **Disabled plugins leave the chain**: a managed member is looked up again on every call
//!   (no I/O: the getter's store and client cache), and one found disabled is dropped for good,
//!   as moby drops a plugin on `plugin disable`; enabling it again does not bring it back, a
//!   reload does. A member that is gone altogether (`plugin rm -f`) fails requests until a
//!   reload, as with moby.

pub mod request;

use std::sync::{Arc, Mutex};

use crate::drivers::authz::{AuthzPlugin, AuthzRequest, Phase};
use crate::error::Error;
use crate::plugin::getter::{Capability, GetError, Mode, PluginGetter};
use request::MAX_BODY_SIZE;

/// Why a request did not get through the chain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthzError {
    #[error("authorization denied by plugin {plugin}: {msg}")]
    Denied { plugin: String, msg: String },
    #[error("plugin {plugin} failed with error: {error}")]
    PluginFailed { plugin: String, error: String },
    #[error("request body too large for authorization plugin: size exceeds {MAX_BODY_SIZE} bytes")]
    BodyTooLarge,
    /// berth only: a body the plugins were not shown (not declared JSON) on a route whose
    /// handler would read it.
    #[error(
        "request body not shown to authorization plugins: send it with Content-Type application/json (got {content_type:?})"
    )]
    UnseenBody { content_type: String },
    /// berth only: a request target the plugins would read differently from the router
    /// (percent-escapes in the path, an absolute URI).
    #[error(
        "request target {0:?} refused while authorization plugins are enabled: send the path as is, without percent-escapes"
    )]
    AmbiguousTarget(String),
    #[error("error reading request body: {0}")]
    ReadBody(String),
}

impl From<AuthzError> for Error {
    fn from(e: AuthzError) -> Error {
        match e {
            AuthzError::Denied { .. } => Error::Forbidden(e.to_string()),
            AuthzError::UnseenBody { .. } | AuthzError::AmbiguousTarget(_) => {
                Error::InvalidParameter(e.to_string())
            }
            AuthzError::PluginFailed { .. }
            | AuthzError::BodyTooLarge
            | AuthzError::ReadBody(_) => Error::System(e.to_string()),
        }
    }
}

/// A configuration naming a plugin that cannot serve in the chain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("failed to validate authorization plugin: {0}")]
pub struct ChainError(pub GetError);

/// The chain of authorization plugins. Cheap to consult when empty (one lock, no allocation).
pub struct Chain {
    getter: Arc<PluginGetter>,
    /// The members as resolved (legacy plugins are used as they are; managed ones are looked
    /// up again on each call, by ID). Replaced whole on reload and when a member leaves; calls
    /// work on a snapshot.
    members: Mutex<Arc<Vec<AuthzPlugin>>>,
    /// The names configured at start-up, duplicates dropped: what `/info` reports (dockerd's
    /// reload does not change it).
    configured: Vec<String>,
    /// `--authz-peer-credentials`: plugins are told the unix socket peer's user.
    peer_credentials: bool,
}

impl Chain {
    /// The chain of `names` (duplicates dropped), each resolved now; the first that does not
    /// resolve fails it.
    pub async fn resolve(
        getter: Arc<PluginGetter>,
        names: &[String],
        peer_credentials: bool,
    ) -> Result<Chain, ChainError> {
        let (configured, members) = resolve_all(&getter, names).await?;
        Ok(Chain {
            getter,
            members: Mutex::new(Arc::new(members)),
            configured,
            peer_credentials,
        })
    }

    /// Replaces the chain with `names`, all resolved, or leaves it as it is.
    pub async fn reload(&self, names: &[String]) -> Result<(), ChainError> {
        let (_, members) = resolve_all(&self.getter, names).await?;
        *lock(&self.members) = Arc::new(members);
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        lock(&self.members).is_empty()
    }

    /// The names configured at start-up (`/info`'s `Plugins.Authorization`).
    pub fn configured(&self) -> &[String] {
        &self.configured
    }

    /// The members' names, in order.
    pub fn names(&self) -> Vec<String> {
        self.snapshot()
            .iter()
            .map(|plugin| plugin.name().to_string())
            .collect()
    }

    pub fn peer_credentials(&self) -> bool {
        self.peer_credentials
    }

    fn snapshot(&self) -> Arc<Vec<AuthzPlugin>> {
        Arc::clone(&lock(&self.members))
    }

    /// Asks every member in order; the first deny or failure is the answer.
    pub async fn authorize(&self, phase: Phase, request: &AuthzRequest) -> Result<(), AuthzError> {
        for member in self.snapshot().iter() {
            let Some(plugin) = self.current(member).await? else {
                continue;
            };
            log::debug!("AuthZ {phase:?} using plugin {}", plugin.name());
            let verdict =
                plugin
                    .authorize(phase, request)
                    .await
                    .map_err(|e| AuthzError::PluginFailed {
                        plugin: plugin.name().to_string(),
                        error: e.to_string(),
                    })?;
            if !verdict.allow {
                return Err(AuthzError::Denied {
                    plugin: plugin.name().to_string(),
                    msg: verdict.msg,
                });
            }
        }
        Ok(())
    }

    /// The member as it is now: `None` (and the member dropped) when it is a managed plugin
    /// that was disabled.
    async fn current(&self, member: &AuthzPlugin) -> Result<Option<AuthzPlugin>, AuthzError> {
        let Some(id) = member.handle().managed_id() else {
            return Ok(Some(member.clone()));
        };
        match self.getter.get(id, Capability::Authz, Mode::Lookup).await {
            Ok(handle) => Ok(Some(AuthzPlugin::new(handle))),
            Err(GetError::Disabled(_)) => {
                self.leave(id);
                Ok(None)
            }
            Err(e) => Err(AuthzError::PluginFailed {
                plugin: member.name().to_string(),
                error: e.to_string(),
            }),
        }
    }

    /// Drops the managed plugin `id` from the chain.
    fn leave(&self, id: &str) {
        let mut members = lock(&self.members);
        let before = members.len();
        let kept: Vec<AuthzPlugin> = members
            .iter()
            .filter(|m| m.handle().managed_id() != Some(id))
            .cloned()
            .collect();
        if kept.len() != before {
            log::info!("authorization plugin {id} was disabled: it leaves the chain");
            *members = Arc::new(kept);
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

async fn resolve_all(
    getter: &PluginGetter,
    names: &[String],
) -> Result<(Vec<String>, Vec<AuthzPlugin>), ChainError> {
    let mut configured: Vec<String> = Vec::new();
    let mut members = Vec::new();
    for name in names {
        if configured.contains(name) {
            continue;
        }
        let handle = getter
            .get(name, Capability::Authz, Mode::Lookup)
            .await
            .map_err(ChainError)?;
        configured.push(name.clone());
        members.push(AuthzPlugin::new(handle));
    }
    Ok((configured, members))
}
