//! The standard feature library (`manifests/library/`), compiled in so that `devplane validate`
//! and `devplane up` have it wherever the binary runs.

use crate::v1alpha1::DeviceModel;

/// Every file of `manifests/library/`, by file name.
pub const FILES: &[(&str, &str)] = &[
    (
        "00-namespace.yaml",
        include_str!("../../../manifests/library/00-namespace.yaml"),
    ),
    (
        "barometer.yaml",
        include_str!("../../../manifests/library/barometer.yaml"),
    ),
    (
        "current.yaml",
        include_str!("../../../manifests/library/current.yaml"),
    ),
    (
        "device-info.yaml",
        include_str!("../../../manifests/library/device-info.yaml"),
    ),
    (
        "energy.yaml",
        include_str!("../../../manifests/library/energy.yaml"),
    ),
    (
        "frequency.yaml",
        include_str!("../../../manifests/library/frequency.yaml"),
    ),
    (
        "humidity.yaml",
        include_str!("../../../manifests/library/humidity.yaml"),
    ),
    (
        "illuminance.yaml",
        include_str!("../../../manifests/library/illuminance.yaml"),
    ),
    (
        "irradiance.yaml",
        include_str!("../../../manifests/library/irradiance.yaml"),
    ),
    (
        "location.yaml",
        include_str!("../../../manifests/library/location.yaml"),
    ),
    (
        "power-factor.yaml",
        include_str!("../../../manifests/library/power-factor.yaml"),
    ),
    (
        "power.yaml",
        include_str!("../../../manifests/library/power.yaml"),
    ),
    (
        "temperature.yaml",
        include_str!("../../../manifests/library/temperature.yaml"),
    ),
    (
        "three-phase-measurement.yaml",
        include_str!("../../../manifests/library/three-phase-measurement.yaml"),
    ),
    (
        "voltage.yaml",
        include_str!("../../../manifests/library/voltage.yaml"),
    ),
    (
        "wind.yaml",
        include_str!("../../../manifests/library/wind.yaml"),
    ),
];

/// Every DeviceModel of the library.
pub fn models() -> Result<Vec<DeviceModel>, serde_yaml::Error> {
    let mut models = Vec::new();
    for (_, text) in FILES {
        let value: serde_yaml::Value = serde_yaml::from_str(text)?;
        if value.get("kind").and_then(serde_yaml::Value::as_str) == Some("DeviceModel") {
            models.push(serde_yaml::from_value(value)?);
        }
    }
    Ok(models)
}
