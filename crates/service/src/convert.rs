//! Lead conversion (PRODUCT.md A3): a lead becomes a company (new, or an existing one), a
//! contact and optionally a deal, and the lead is marked converted with references to them —
//! all in one `WriteBatch` through the one write path. The new company and contact get the same
//! checks as any create (rules, references, duplicates: 409 `duplicate`, or `possible_duplicate`
//! unless `confirm_not_duplicate` gives a reason), the caller needs create permission on each
//! object and update scope on the lead (out of read scope: 404).

use crate::access::Operation;
use crate::duplicates::ConfirmNotDuplicate;
use crate::error::{ServiceError, ServiceResult, again_if_stale};
use crate::records::{CreateOptions, OverrideReason, PreparedWrite};
use crate::view::RecordView;
use crate::{RequestContext, Service};
use custodian_core::schema::ObjectDef;
use custodian_core::values::validate_record;
use custodian_core::{ErrorCode, FieldError};
use custodian_store::{StoredRecord, WriteAction, now_micros};
use serde::Serialize;
use serde_json::{Map, Value, json};
use uuid::Uuid;

/// The company a lead converts into.
#[derive(Debug, Clone)]
pub enum ConvertCompany {
    /// An existing company (must be active and inside the caller's read scope).
    Existing(Uuid),
    /// A new company with these fields.
    New(Map<String, Value>),
}

/// A conversion request.
#[derive(Debug, Clone)]
pub struct ConvertRequest {
    pub company: ConvertCompany,
    /// Fields of the new contact (its company is set to the converted company).
    pub contact: Map<String, Value>,
    /// Fields of an optional new deal (company and contact are set).
    pub deal: Option<Map<String, Value>>,
    /// Confirms that the new company and contact are not duplicates of proposed candidates.
    pub confirm_not_duplicate: Option<ConfirmNotDuplicate>,
    /// Saves a company USCC whose checksum fails (data stewards and admins).
    pub uscc_override: Option<OverrideReason>,
}

/// What a conversion wrote.
#[derive(Debug, Clone, Serialize)]
pub struct ConversionView {
    pub lead: RecordView,
    pub company: RecordView,
    pub contact: RecordView,
    pub deal: Option<RecordView>,
}

fn invalid(field: &str, en: &str, zh: &str) -> ServiceError {
    ServiceError::validation(vec![FieldError::new(field, "invalid", en, zh)])
}

impl Service {
    pub async fn convert_lead(
        &self,
        ctx: &RequestContext,
        lead_id: Uuid,
        request: &ConvertRequest,
    ) -> ServiceResult<ConversionView> {
        again_if_stale(|| self.convert_lead_once(ctx, lead_id, request)).await
    }

    async fn convert_lead_once(
        &self,
        ctx: &RequestContext,
        lead_id: Uuid,
        request: &ConvertRequest,
    ) -> ServiceResult<ConversionView> {
        self.refresh_schema_if_stale().await?;
        let leads = self.object_def("leads")?;
        let loaded = self.load_scoped(ctx, &leads, lead_id, Operation::Update).await;
        if let Err(e) = &loaded {
            self.audit_refusal(ctx, "leads", Some(lead_id), "convert", e).await;
        }
        let lead = loaded?;
        if lead.deleted_at.is_some() {
            return Err(ServiceError::not_found());
        }
        let before = self.decrypt_fields(&leads, lead_id, &lead.fields);
        if before.get("status").and_then(Value::as_str) == Some("converted") {
            return Err(ServiceError::with_message(ErrorCode::Conflict, "The lead is converted already."));
        }
        for (name, fields) in [("contact", Some(&request.contact)), ("deal", request.deal.as_ref())] {
            let links: &[&str] = if name == "contact" { &["company_id"] } else { &["company_id", "contact_id"] };
            if let Some(k) = fields.and_then(|f| f.keys().find(|k| links.contains(&k.as_str()))) {
                return Err(invalid(
                    &format!("{name}.{k}"),
                    "Set by the conversion: leave it out.",
                    "由转化过程自动设置，请勿填写。",
                ));
            }
        }
        let options = CreateOptions {
            confirm_not_duplicate: request.confirm_not_duplicate.clone(),
            uscc_override: request.uscc_override.clone(),
            ..Default::default()
        };
        let mut writes: Vec<PreparedWrite> = Vec::new();
        let mut pending: Vec<(String, Uuid)> = Vec::new();
        let (company_id, company_created) = match &request.company {
            ConvertCompany::Existing(id) => {
                let companies = self.object_def("companies")?;
                let company = self.load_scoped(ctx, &companies, *id, Operation::Read).await?;
                if company.deleted_at.is_some() {
                    return Err(ServiceError::not_found());
                }
                (*id, false)
            }
            ConvertCompany::New(fields) => {
                let fields = with_lead_source(&self.object_def("companies")?, fields, &before);
                let (id, w) = self.prepare_create_with(ctx, "companies", &fields, &options, &pending).await?;
                writes.push(w);
                pending.push(("companies".into(), id));
                (id, true)
            }
        };
        let mut contact_fields = with_lead_source(&self.object_def("contacts")?, &request.contact, &before);
        contact_fields.insert("company_id".into(), json!(company_id));
        let (contact_id, w) = self.prepare_create_with(ctx, "contacts", &contact_fields, &options, &pending).await?;
        writes.push(w);
        pending.push(("contacts".into(), contact_id));
        let deal_id = match &request.deal {
            None => None,
            Some(fields) => {
                let mut deal_fields = fields.clone();
                deal_fields.insert("company_id".into(), json!(company_id));
                deal_fields.insert("contact_id".into(), json!(contact_id));
                let (id, w) = self.prepare_create_with(ctx, "deals", &deal_fields, &options, &pending).await?;
                writes.push(w);
                pending.push(("deals".into(), id));
                Some(id)
            }
        };
        // The lead: converted, with its references.
        let mut changes = Map::new();
        changes.insert("status".into(), json!("converted"));
        changes.insert("converted_company_id".into(), json!(company_id));
        changes.insert("converted_contact_id".into(), json!(contact_id));
        if let Some(d) = deal_id {
            changes.insert("converted_deal_id".into(), json!(d));
        }
        self.check_field_writes(ctx, &leads, &changes)?;
        let after = validate_record(&leads, Some(&before), &changes, &self.stored_values_context())
            .map_err(ServiceError::validation)?;
        self.check_references_with(&leads, &after, &pending.iter().cloned().collect()).await?;
        let next = StoredRecord {
            version: lead.version + 1,
            updated_at: now_micros().max(lead.updated_at),
            updated_by: ctx.actor.as_ref().map(|a| a.user_id),
            ..lead.clone()
        };
        let mut prepared =
            self.prepare_write(ctx, &leads, WriteAction::Update, Some(&lead), Some(&before), &after, next)?;
        prepared.audit.action = "record.convert".into();
        if let Value::Object(details) = &mut prepared.audit.details {
            details.insert(
                "conversion".into(),
                json!({
                    "company_id": company_id,
                    "company_created": company_created,
                    "contact_id": contact_id,
                    "deal_id": deal_id,
                }),
            );
        }
        let mut all: Vec<crate::records::Prepared> = writes.into_iter().map(|w| w.0).collect();
        for p in &mut all {
            if let Value::Object(details) = &mut p.audit.details {
                details.insert("converted_from_lead".into(), json!(lead_id));
            }
        }
        all.push(prepared);
        self.apply(all).await?;
        Ok(ConversionView {
            lead: self.fetch_view(ctx, "leads", lead_id).await?,
            company: self.fetch_view(ctx, "companies", company_id).await?,
            contact: self.fetch_view(ctx, "contacts", contact_id).await?,
            deal: match deal_id {
                Some(id) => Some(self.fetch_view(ctx, "deals", id).await?),
                None => None,
            },
        })
    }
}

/// New company or contact fields with the lead's source where the caller gave none: the
/// channel a customer came through stays known after conversion (and trusted-source merges
/// can rank it). Only into a `source` that offers that choice: an object may keep a custom
/// `source` of its own from before the standard one (`Schema::with_custom_fields`), which the
/// lead's value need not fit.
fn with_lead_source(target: &ObjectDef, fields: &Map<String, Value>, lead: &Map<String, Value>) -> Map<String, Value> {
    let mut fields = fields.clone();
    let offered = |v: &Value| {
        target.source_choices().is_some_and(|choices| v.as_str().is_some_and(|s| choices.iter().any(|o| o == s)))
    };
    if !fields.contains_key("source")
        && let Some(source) = lead.get("source").filter(|v| offered(v))
    {
        fields.insert("source".into(), source.clone());
    }
    fields
}
