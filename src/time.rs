//! Business dates are calendar dates in Asia/Seoul. Korea has kept UTC+9 with
//! no daylight saving since 1988, so a fixed offset is exact and saves a
//! time-zone database.

use chrono::{DateTime, FixedOffset, NaiveDate, TimeZone, Utc};

/// UTC+09:00.
pub fn seoul() -> FixedOffset {
    FixedOffset::east_opt(9 * 3600).expect("valid offset")
}

/// Today's date in Seoul at instant `now`.
pub fn today_seoul_at(now: DateTime<Utc>) -> NaiveDate {
    now.with_timezone(&seoul()).date_naive()
}

/// Today's date in Seoul.
pub fn today_seoul() -> NaiveDate {
    today_seoul_at(Utc::now())
}

/// Yesterday's date in Seoul: the default business date of daily aggregations.
pub fn yesterday_seoul() -> NaiveDate {
    today_seoul().pred_opt().expect("date in range")
}

/// 00:00 of `date` in Seoul, as a UTC instant.
pub fn start_of_day_seoul(date: NaiveDate) -> DateTime<Utc> {
    seoul()
        .from_local_datetime(&date.and_hms_opt(0, 0, 0).expect("midnight exists"))
        .single()
        .expect("fixed offset is unambiguous")
        .with_timezone(&Utc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seoul_midnight_is_fifteen_utc_the_day_before() {
        let d = NaiveDate::from_ymd_opt(2026, 3, 5).unwrap();
        assert_eq!(
            start_of_day_seoul(d).to_rfc3339(),
            "2026-03-04T15:00:00+00:00"
        );
    }

    #[test]
    fn today_rolls_over_at_fifteen_utc() {
        let before = Utc.with_ymd_and_hms(2026, 3, 4, 14, 59, 59).unwrap();
        let after = Utc.with_ymd_and_hms(2026, 3, 4, 15, 0, 0).unwrap();
        assert_eq!(
            today_seoul_at(before),
            NaiveDate::from_ymd_opt(2026, 3, 4).unwrap()
        );
        assert_eq!(
            today_seoul_at(after),
            NaiveDate::from_ymd_opt(2026, 3, 5).unwrap()
        );
    }
}
