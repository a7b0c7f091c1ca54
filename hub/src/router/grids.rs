//! The grid map: which grid a place is in.
//!
//! A GeoJSON FeatureCollection of polygons, each with a `code` property
//! (`yingfeng`, `yingfeng/yingyi`, `yingfeng/yingyi/2`): the street, its
//! community grids and their sub-grids. An event with coordinates and no
//! `grid` gets the finest grid (the code with the most segments) whose
//! polygon contains it; outside every grid it gets the street's code and
//! the extension `gridflag = "outside-map"`, so someone looks at it.

use geo::{Contains, Coord, LineString, MultiPolygon, Point, Polygon};
use serde_json::Value;
use std::path::Path;

struct Grid {
    code: String,
    depth: usize,
    shape: MultiPolygon<f64>,
    name: Option<String>,
    name_en: Option<String>,
}

/// One grid of the map, as a console draws it.
pub struct GridShape<'a> {
    /// Its code (`yingfeng/yingyi/2`).
    pub code: &'a str,
    /// Segments in the code: 1 the street, 2 a community, 3 a sub-grid.
    pub depth: usize,
    /// Its `name` property (Chinese first), if any.
    pub name: Option<&'a str>,
    /// Its `name_en` property, if any.
    pub name_en: Option<&'a str>,
    /// The polygons, WGS-84 (x = lon, y = lat).
    pub shape: &'a MultiPolygon<f64>,
}

/// A loaded grid map.
pub struct GridMap {
    street: String,
    /// Finest first.
    grids: Vec<Grid>,
}

/// Where a place falls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// The grid code.
    pub grid: String,
    /// False when the place is outside every grid (the street was used).
    pub inside: bool,
}

fn ring(v: &Value, at: &str) -> Result<LineString<f64>, String> {
    let points = v
        .as_array()
        .ok_or_else(|| format!("{at}: a ring must be an array of [lon, lat]"))?;
    points
        .iter()
        .map(|p| {
            let xy = p.as_array().filter(|a| a.len() >= 2);
            match xy.and_then(|a| Some((a[0].as_f64()?, a[1].as_f64()?))) {
                Some((lon, lat)) => Ok(Coord { x: lon, y: lat }),
                None => Err(format!("{at}: `{p}` is not [lon, lat]")),
            }
        })
        .collect::<Result<Vec<_>, _>>()
        .map(LineString::new)
}

fn polygon(v: &Value, at: &str) -> Result<Polygon<f64>, String> {
    let rings = v
        .as_array()
        .filter(|r| !r.is_empty())
        .ok_or_else(|| format!("{at}: a polygon must be a non-empty array of rings"))?;
    let exterior = ring(&rings[0], at)?;
    let holes = rings[1..]
        .iter()
        .map(|r| ring(r, at))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Polygon::new(exterior, holes))
}

impl GridMap {
    /// Reads a GeoJSON file; `street` is the code used outside every grid
    /// (default: the map's shortest code).
    pub fn load(path: &Path, street: Option<&str>) -> anyhow::Result<GridMap> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("grid map {}: {e}", path.display()))?;
        let value: Value = serde_json::from_str(&text)
            .map_err(|e| anyhow::anyhow!("grid map {}: not JSON: {e}", path.display()))?;
        GridMap::from_geojson(&value, street)
            .map_err(|m| anyhow::anyhow!("grid map {}: {m}", path.display()))
    }

    /// Builds a map from a parsed FeatureCollection.
    pub fn from_geojson(value: &Value, street: Option<&str>) -> Result<GridMap, String> {
        let features = value
            .get("features")
            .and_then(Value::as_array)
            .ok_or("not a GeoJSON FeatureCollection (no `features` array)")?;
        let mut grids = Vec::with_capacity(features.len());
        for (i, f) in features.iter().enumerate() {
            let at = format!("features[{i}]");
            let code = f
                .pointer("/properties/code")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("{at}: properties.code (the grid code) is required"))?
                .to_string();
            let geometry = f
                .get("geometry")
                .ok_or_else(|| format!("{at} (`{code}`): geometry is required"))?;
            let coords = geometry
                .get("coordinates")
                .ok_or_else(|| format!("{at} (`{code}`): geometry.coordinates is required"))?;
            let shape = match geometry.get("type").and_then(Value::as_str) {
                Some("Polygon") => MultiPolygon::new(vec![polygon(coords, &at)?]),
                Some("MultiPolygon") => MultiPolygon::new(
                    coords
                        .as_array()
                        .ok_or_else(|| format!("{at}: MultiPolygon coordinates must be an array"))?
                        .iter()
                        .map(|p| polygon(p, &at))
                        .collect::<Result<_, _>>()?,
                ),
                other => {
                    return Err(format!(
                        "{at} (`{code}`): geometry type {other:?} is not Polygon or MultiPolygon"
                    ))
                }
            };
            let text = |key: &str| {
                f.pointer(&format!("/properties/{key}"))
                    .and_then(Value::as_str)
                    .map(str::to_string)
            };
            grids.push(Grid {
                depth: code.split('/').filter(|s| !s.is_empty()).count(),
                name: text("name"),
                name_en: text("name_en"),
                code,
                shape,
            });
        }
        if grids.is_empty() {
            return Err("the map has no grids".into());
        }
        grids.sort_by(|a, b| b.depth.cmp(&a.depth).then_with(|| a.code.cmp(&b.code)));
        let street = match street {
            Some(s) => s.to_string(),
            None => grids
                .iter()
                .min_by_key(|g| g.depth)
                .map(|g| g.code.clone())
                .unwrap_or_default(),
        };
        Ok(GridMap { street, grids })
    }

    /// The finest grid containing (`lat`, `lon`), or the street, flagged.
    pub fn assign(&self, lat: f64, lon: f64) -> Assignment {
        let p = Point::new(lon, lat);
        match self.grids.iter().find(|g| g.shape.contains(&p)) {
            Some(g) => Assignment {
                grid: g.code.clone(),
                inside: true,
            },
            None => Assignment {
                grid: self.street.clone(),
                inside: false,
            },
        }
    }

    /// Every grid, coarsest first (the street, then its communities, then
    /// their sub-grids), by code within a level.
    pub fn grids(&self) -> impl Iterator<Item = GridShape<'_>> {
        self.grids.iter().rev().map(|g| GridShape {
            code: &g.code,
            depth: g.depth,
            name: g.name.as_deref(),
            name_en: g.name_en.as_deref(),
            shape: &g.shape,
        })
    }

    /// The street's code.
    pub fn street(&self) -> &str {
        &self.street
    }

    /// How many grids the map has.
    pub fn len(&self) -> usize {
        self.grids.len()
    }

    /// Whether the map is empty (it never is once loaded).
    pub fn is_empty(&self) -> bool {
        self.grids.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn square(code: &str, x0: f64, y0: f64, x1: f64, y1: f64) -> Value {
        serde_json::json!({
            "type": "Feature",
            "properties": {"code": code},
            "geometry": {"type": "Polygon", "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]}
        })
    }

    #[test]
    fn the_finest_grid_wins_and_outside_is_the_street_flagged() {
        let map = GridMap::from_geojson(
            &serde_json::json!({"type": "FeatureCollection", "features": [
                square("s", 0.0, 0.0, 10.0, 10.0),
                square("s/a", 0.0, 0.0, 5.0, 10.0),
                square("s/a/1", 0.0, 0.0, 5.0, 5.0),
                square("s/b", 5.0, 0.0, 10.0, 10.0),
            ]}),
            None,
        )
        .unwrap();
        assert_eq!(
            map.assign(2.0, 2.0),
            Assignment {
                grid: "s/a/1".into(),
                inside: true
            }
        );
        assert_eq!(
            map.assign(7.0, 2.0),
            Assignment {
                grid: "s/a".into(),
                inside: true
            }
        );
        assert_eq!(
            map.assign(2.0, 7.0),
            Assignment {
                grid: "s/b".into(),
                inside: true
            }
        );
        assert_eq!(
            map.assign(20.0, 20.0),
            Assignment {
                grid: "s".into(),
                inside: false
            }
        );
    }

    #[test]
    fn bad_maps_name_the_feature() {
        let e = GridMap::from_geojson(&serde_json::json!({"features": [{"properties": {}}]}), None)
            .err()
            .unwrap();
        assert!(e.contains("features[0]") && e.contains("code"), "{e}");
        let e = GridMap::from_geojson(
            &serde_json::json!({"features": [{"properties": {"code": "x"}, "geometry": {"type": "Point", "coordinates": [0, 0]}}]}),
            None,
        )
        .err()
        .unwrap();
        assert!(e.contains("`x`") && e.contains("Point"), "{e}");
    }
}
