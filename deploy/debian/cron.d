# aidt-batch: the jobs' schedule, `prod` profile, for /etc/cron.d/aidt-batch.
# Generated from the job registry by `aidt-batch crontab --system --profile <profile>`: do not edit by hand;
# installed by the aidt-batch Debian package (a conffile: local edits survive upgrades).
# Times are Asia/Seoul (CRON_TZ). Debian's `cron` ignores CRON_TZ: there the host's own time zone
# must be Asia/Seoul (`timedatectl set-timezone Asia/Seoul`, or /etc/localtime).
# Secrets are KEY=value lines in /etc/aidt-batch/env (mode 600, owner aidt): aidt-batch reads them itself
# (AIDT_ENV_FILE), literally; no line sources the file. Output goes to /var/log/aidt-batch/<job>.log.
SHELL=/bin/bash
PATH=/usr/sbin:/usr/bin:/sbin:/bin
CRON_TZ=Asia/Seoul
AIDT_CONFIG_DIR=/etc/aidt-batch
AIDT_ENV_FILE=/etc/aidt-batch/env

# LMS-01-001 [LMS] Delete old log-type data (daily) / 오래된 로그성 데이터 삭제 일배치
0 4 * * * aidt [ -x /usr/bin/aidt-batch ] && /usr/bin/aidt-batch lms-01-001 --profile prod >> /var/log/aidt-batch/lms-01-001.log 2>&1

# LMS-01-002 [LMS] Save daily student competency indicators / 학생역량지표 일일 데이터 저장 일배치
10 4 * * * aidt [ -x /usr/bin/aidt-batch ] && /usr/bin/aidt-batch lms-01-002 --profile prod >> /var/log/aidt-batch/lms-01-002.log 2>&1

# LMS-01-003 [LMS] Save KC to achievement-standard mapping / KC-성취기준코드 정보 매핑 저장 배치
0 4 * * * aidt [ -x /usr/bin/aidt-batch ] && /usr/bin/aidt-batch lms-01-003 --profile prod >> /var/log/aidt-batch/lms-01-003.log 2>&1

# LMS-01-004 [LMS] Create assignment-deadline notifications / 학습 관리 시스템 과제 마감 알림메세지 생성 일배치
#   schedule: the seed prints `_/30_ * * *` (Markdown mangling of */30)
*/30 * * * * aidt [ -x /usr/bin/aidt-batch ] && /usr/bin/aidt-batch lms-01-004 --profile prod >> /var/log/aidt-batch/lms-01-004.log 2>&1

# LMS-01-005 [LMS] Create praise notifications (daily) / 학습 관리 시스템 칭찬 알림메세지 생성 일배치
0 1 * * * aidt [ -x /usr/bin/aidt-batch ] && /usr/bin/aidt-batch lms-01-005 --profile prod >> /var/log/aidt-batch/lms-01-005.log 2>&1

# LMS-01-006 [LMS] Student learning statistics (daily) / 학생 학습 통계 일배치
0 6 * * * aidt [ -x /usr/bin/aidt-batch ] && /usr/bin/aidt-batch lms-01-006 --profile prod >> /var/log/aidt-batch/lms-01-006.log 2>&1

# LMS-01-007 [LMS] Delete data of students without consent (daily) / 개인정보 제공 미동의 학생정보 삭제 일배치
30 3 * * * aidt [ -x /usr/bin/aidt-batch ] && /usr/bin/aidt-batch lms-01-007 --profile prod >> /var/log/aidt-batch/lms-01-007.log 2>&1

# LMS-01-008 [LMS] KERIS dashboard data, 5 kinds / Keris 대시보드 데이터 5종 배치
#   schedule: the seed's text says every hour, its crontab `0 19 * * *`: hourly, as the text says
0 * * * * aidt [ -x /usr/bin/aidt-batch ] && /usr/bin/aidt-batch lms-01-008 --profile prod >> /var/log/aidt-batch/lms-01-008.log 2>&1

# LMS-01-009 [LMS] Create and upload the LLM dataset / LLM DATASET 생성 및 업로드
#   unscheduled: the seed leaves it undecided (미정); run by hand when needed
# (no schedule) /usr/bin/aidt-batch lms-01-009 --profile prod >> /var/log/aidt-batch/lms-01-009.log 2>&1

# LMS-01-010 [LMS] Save standard-system codes per course / 코스ID별 표준체계코드 저장
30 4 * * * aidt [ -x /usr/bin/aidt-batch ] && /usr/bin/aidt-batch lms-01-010 --profile prod >> /var/log/aidt-batch/lms-01-010.log 2>&1

# DC-01-001 [DC] Bulk send of learning history to KERIS / KERIS 학습 이력 데이터 일괄 전송
10 1 * * * aidt [ -x /usr/bin/aidt-batch ] && /usr/bin/aidt-batch dc-01-001 --profile prod >> /var/log/aidt-batch/dc-01-001.log 2>&1

# DC-01-002 [DC] Resend of learning history to KERIS / KERIS 학습 이력 데이터 재전송
0 5 * * * aidt [ -x /usr/bin/aidt-batch ] && /usr/bin/aidt-batch dc-01-002 --profile prod >> /var/log/aidt-batch/dc-01-002.log 2>&1

# DC-01-003 [DC] Bulk delete of data without consent / 개인정보 미동의 데이터 일괄 삭제
0 3 * * * aidt [ -x /usr/bin/aidt-batch ] && /usr/bin/aidt-batch dc-01-003 --profile prod >> /var/log/aidt-batch/dc-01-003.log 2>&1

# DC-01-004 [DC] KERIS achievement-level update / KERIS 성취 수준 업데이트
#   schedule: the seed leaves it undecided (미정, temporary job); daily at dawn after LMS-01-008's 04:00 run refreshed the view, so it only creates the rows and fills the levels that refresh left missing, then sends their scores (API-005)
50 4 * * * aidt [ -x /usr/bin/aidt-batch ] && /usr/bin/aidt-batch dc-01-004 --profile prod >> /var/log/aidt-batch/dc-01-004.log 2>&1

# LRS-01-001 [LRS] Aggregate public batch data (xAPI), daily / 공공 배치데이터 집계(xAPI) 일배치
10 0 * * * aidt [ -x /usr/bin/aidt-batch ] && /usr/bin/aidt-batch lrs-01-001 --profile prod >> /var/log/aidt-batch/lrs-01-001.log 2>&1

# LRS-01-002 [LRS] Aggregate batch data for error resend (xAPI) / 공공 배치데이터 오류 재전송용 집계(xAPI) 일배치
30 23 * * * aidt [ -x /usr/bin/aidt-batch ] && /usr/bin/aidt-batch lrs-01-002 --profile prod >> /var/log/aidt-batch/lrs-01-002.log 2>&1

# LCMS-01-001 [LCMS] Copy LCMS content and items (daily) / 콘텐츠, 문항 데이터 select 일배치
#   schedule: the seed's line passes no job id; this one does
0 1 * * * aidt [ -x /usr/bin/aidt-batch ] && /usr/bin/aidt-batch lcms-01-001 --profile prod >> /var/log/aidt-batch/lcms-01-001.log 2>&1
#   also: weekly full read, Sunday 02:30: rows committed late with a mod_dt behind the watermark come back
30 2 * * 0 aidt [ -x /usr/bin/aidt-batch ] && /usr/bin/aidt-batch lcms-01-001 --profile prod --full >> /var/log/aidt-batch/lcms-01-001.log 2>&1

# BO-01-001 [BO] Mark admins inactive 15 days since approval dormant / 통합관리시스템 승인 기준 15일 미접속자 일배치
35 0 * * * aidt [ -x /usr/bin/aidt-batch ] && /usr/bin/aidt-batch bo-01-001 --profile prod >> /var/log/aidt-batch/bo-01-001.log 2>&1

# BO-01-002 [BO] Apply planned-maintenance schedule / 통합관리시스템 PM일정 일배치
#   schedule: the seed prints `_/10_ * * *` (Markdown mangling of */10)
*/10 * * * * aidt [ -x /usr/bin/aidt-batch ] && /usr/bin/aidt-batch bo-01-002 --profile prod >> /var/log/aidt-batch/bo-01-002.log 2>&1

# BO-01-003 [BO] LMS connected-user aggregation (daily) / 통합관리시스템 LMS 접속자 집계 일배치
5 2 * * * aidt [ -x /usr/bin/aidt-batch ] && /usr/bin/aidt-batch bo-01-003 --profile prod >> /var/log/aidt-batch/bo-01-003.log 2>&1

# BO-01-004 [BO] LMS login aggregation (daily) / 통합관리시스템 LMS 로그인 집계 일배치
5 3 * * * aidt [ -x /usr/bin/aidt-batch ] && /usr/bin/aidt-batch bo-01-004 --profile prod >> /var/log/aidt-batch/bo-01-004.log 2>&1

# BO-01-005 [BO] Hide notices whose display period is over / 통합관리시스템 공지사항 기간 비노출 일배치
5 0 * * * aidt [ -x /usr/bin/aidt-batch ] && /usr/bin/aidt-batch bo-01-005 --profile prod >> /var/log/aidt-batch/bo-01-005.log 2>&1

# BO-05-006 [BO] Send weekly LMS usage statistics mail / 통합관리시스템 LMS 이용 주간 통계 메일 전송
5 9 * * 6 aidt [ -x /usr/bin/aidt-batch ] && /usr/bin/aidt-batch bo-05-006 --profile prod >> /var/log/aidt-batch/bo-05-006.log 2>&1

# BO-01-007 [BO] Login-user statistics, daily/weekly/monthly / 통합관리시스템 LMS 로그인 유저기준 집계 일/주/월 통계 일배치
5 4 * * * aidt [ -x /usr/bin/aidt-batch ] && /usr/bin/aidt-batch bo-01-007 --profile prod >> /var/log/aidt-batch/bo-01-007.log 2>&1

