//! `NotificationConfiguration` between S3's XML shapes (`s3s` DTOs) and the engine's
//! [`NotificationConfig`]. Validation (event names, ARNs, filters) is the engine's; only
//! what Nimbus cannot deliver at all, SNS topics, is refused here.

use crate::errors::OrS3;
use nimbus_objects::{KeyFilter, NotificationConfig, TargetConfig};
use s3s::dto::{
    EventBridgeConfiguration, FilterRule, FilterRuleName, GetBucketNotificationConfigurationOutput,
    LambdaFunctionConfiguration, NotificationConfiguration, NotificationConfigurationFilter,
    QueueConfiguration, S3KeyFilter,
};
use s3s::{s3_error, S3Result};

/// The engine's configuration from a `PutBucketNotificationConfiguration` body.
pub(crate) fn config_of(c: NotificationConfiguration) -> S3Result<NotificationConfig> {
    if c.topic_configurations
        .as_ref()
        .is_some_and(|t| !t.is_empty())
    {
        return Err(s3_error!(
            InvalidArgument,
            "SNS topics cannot be notification destinations: Nimbus has no SNS. Use a queue \
             (QueueConfigurations), a function (LambdaFunctionConfigurations) or EventBridge \
             (EventBridgeConfiguration)"
        ));
    }
    let mut functions = Vec::new();
    for f in c.lambda_function_configurations.unwrap_or_default() {
        functions.push(target(f.id, f.lambda_function_arn, f.events, f.filter)?);
    }
    let mut queues = Vec::new();
    for q in c.queue_configurations.unwrap_or_default() {
        queues.push(target(q.id, q.queue_arn, q.events, q.filter)?);
    }
    Ok(NotificationConfig {
        functions,
        queues,
        event_bridge: c.event_bridge_configuration.is_some(),
    })
}

fn target(
    id: Option<String>,
    arn: String,
    events: Vec<s3s::dto::Event>,
    filter: Option<NotificationConfigurationFilter>,
) -> S3Result<TargetConfig> {
    let rules = filter
        .and_then(|f| f.key)
        .and_then(|k| k.filter_rules)
        .unwrap_or_default();
    let filter = KeyFilter::from_rules(rules.iter().map(|r| {
        (
            r.name.as_ref().map_or("", FilterRuleName::as_str),
            r.value.as_deref().unwrap_or(""),
        )
    }))
    .or_s3()?;
    Ok(TargetConfig {
        id: id.unwrap_or_default(),
        arn,
        events: events.into_iter().map(String::from).collect(),
        filter,
    })
}

fn filter_dto(f: &KeyFilter) -> Option<NotificationConfigurationFilter> {
    let rules: Vec<FilterRule> = f
        .rules()
        .into_iter()
        .map(|(name, value)| FilterRule {
            name: Some(FilterRuleName::from(name.to_string())),
            value: Some(value.to_string()),
        })
        .collect();
    if rules.is_empty() {
        return None;
    }
    Some(NotificationConfigurationFilter {
        key: Some(S3KeyFilter {
            filter_rules: Some(rules),
        }),
    })
}

fn events_dto(events: &[String]) -> Vec<s3s::dto::Event> {
    events.iter().cloned().map(s3s::dto::Event::from).collect()
}

/// The `GetBucketNotificationConfiguration` answer.
pub(crate) fn output_of(c: NotificationConfig) -> GetBucketNotificationConfigurationOutput {
    let functions: Vec<LambdaFunctionConfiguration> = c
        .functions
        .iter()
        .map(|f| LambdaFunctionConfiguration {
            events: events_dto(&f.events),
            filter: filter_dto(&f.filter),
            id: Some(f.id.clone()),
            lambda_function_arn: f.arn.clone(),
        })
        .collect();
    let queues: Vec<QueueConfiguration> = c
        .queues
        .iter()
        .map(|q| QueueConfiguration {
            events: events_dto(&q.events),
            filter: filter_dto(&q.filter),
            id: Some(q.id.clone()),
            queue_arn: q.arn.clone(),
        })
        .collect();
    GetBucketNotificationConfigurationOutput {
        event_bridge_configuration: c.event_bridge.then_some(EventBridgeConfiguration {}),
        lambda_function_configurations: (!functions.is_empty()).then_some(functions),
        queue_configurations: (!queues.is_empty()).then_some(queues),
        topic_configurations: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use s3s::dto::TopicConfiguration;

    fn rule(name: &str, value: &str) -> FilterRule {
        FilterRule {
            name: Some(FilterRuleName::from(name.to_string())),
            value: Some(value.to_string()),
        }
    }

    #[test]
    fn configurations_round_trip_with_s3s_rule_names() {
        let dto = NotificationConfiguration {
            lambda_function_configurations: Some(vec![LambdaFunctionConfiguration {
                events: vec![s3s::dto::Event::from("s3:ObjectCreated:*".to_string())],
                filter: Some(NotificationConfigurationFilter {
                    key: Some(S3KeyFilter {
                        filter_rules: Some(vec![rule("prefix", "img/"), rule("suffix", ".jpg")]),
                    }),
                }),
                id: Some("f1".into()),
                lambda_function_arn: "arn:aws:lambda:us-east-1:000000000000:function:f".into(),
            }]),
            queue_configurations: Some(vec![QueueConfiguration {
                events: vec![s3s::dto::Event::from("s3:ObjectRemoved:*".to_string())],
                filter: None,
                id: None,
                queue_arn: "arn:aws:sqs:us-east-1:000000000000:q".into(),
            }]),
            event_bridge_configuration: Some(EventBridgeConfiguration {}),
            topic_configurations: None,
        };
        let c = config_of(dto).unwrap();
        assert_eq!(c.functions[0].filter.prefix.as_deref(), Some("img/"));
        assert_eq!(c.functions[0].filter.suffix.as_deref(), Some(".jpg"));
        assert_eq!(c.queues[0].id, "", "generated by the engine");
        assert!(c.event_bridge);
        let out = output_of(c);
        let f = &out.lambda_function_configurations.unwrap()[0];
        let rules = f.filter.as_ref().unwrap().key.as_ref().unwrap();
        let names: Vec<&str> = rules
            .filter_rules
            .as_ref()
            .unwrap()
            .iter()
            .map(|r| r.name.as_ref().unwrap().as_str())
            .collect();
        assert_eq!(names, ["Prefix", "Suffix"], "as S3 answers");
        assert!(out.event_bridge_configuration.is_some());
        assert!(out.queue_configurations.unwrap()[0].filter.is_none());
        assert!(output_of(NotificationConfig::default())
            .lambda_function_configurations
            .is_none());
    }

    #[test]
    fn topics_and_bad_rules_are_refused() {
        let dto = NotificationConfiguration {
            topic_configurations: Some(vec![TopicConfiguration {
                events: vec![s3s::dto::Event::from("s3:ObjectCreated:*".to_string())],
                filter: None,
                id: None,
                topic_arn: "arn:aws:sns:us-east-1:000000000000:t".into(),
            }]),
            ..Default::default()
        };
        let e = config_of(dto).unwrap_err();
        assert_eq!(e.code(), &s3s::S3ErrorCode::InvalidArgument);
        assert!(e.message().unwrap().contains("Nimbus has no SNS"));
        let dto = NotificationConfiguration {
            queue_configurations: Some(vec![QueueConfiguration {
                events: vec![s3s::dto::Event::from("s3:ObjectRemoved:*".to_string())],
                filter: Some(NotificationConfigurationFilter {
                    key: Some(S3KeyFilter {
                        filter_rules: Some(vec![rule("prefix", "a"), rule("Prefix", "b")]),
                    }),
                }),
                id: None,
                queue_arn: "arn:aws:sqs:us-east-1:000000000000:q".into(),
            }]),
            ..Default::default()
        };
        let e = config_of(dto).unwrap_err();
        assert_eq!(e.code(), &s3s::S3ErrorCode::InvalidArgument);
    }
}
